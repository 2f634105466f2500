//! What a well-formed layer turns into: every entry kind, its metadata, replacement rules and
//! whiteouts kept as files.

mod unpack_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use msb_oci::unpack::{Compression, UnpackLimits};
use unpack_support::{gzip, zstd, Sandbox, Spec, Tar};

fn sample() -> Vec<u8> {
    Tar::new()
        .dir("./")
        .dir("./etc/")
        .file("./etc/hostname", "sandbox\n")
        .dir("usr/bin")
        .file("usr/bin/tool", vec![7u8; 300_000])
        .symlink("bin", "usr/bin")
        .finish()
}

fn assert_sample(sb: &Sandbox) {
    assert_eq!(fs::read(sb.path("etc/hostname")).unwrap(), b"sandbox\n");
    assert_eq!(
        fs::read(sb.path("usr/bin/tool")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        fs::read_link(sb.path("bin")).unwrap().as_os_str(),
        "usr/bin"
    );
}

#[test]
fn plain_layer() {
    let sb = Sandbox::new();
    let report = sb.unpack_with(&sample(), Compression::None).unwrap();
    assert_sample(&sb);
    assert_eq!(report.entries, 6);
    assert_eq!(report.bytes, 8 + 300_000);
    assert!(report.skipped.is_empty());
    sb.assert_nothing_outside();
}

#[test]
fn gzip_layer() {
    let sb = Sandbox::new();
    let report = sb.unpack_with(&gzip(&sample()), Compression::Gzip).unwrap();
    assert_sample(&sb);
    assert_eq!(report.entries, 6);
}

#[test]
fn multi_member_gzip_layer() {
    // pigz and some registries' re-compression produce concatenated gzip members.
    let tar = sample();
    let (a, b) = tar.split_at(1024);
    let mut data = gzip(a);
    data.extend(gzip(b));
    let sb = Sandbox::new();
    sb.unpack_with(&data, Compression::Gzip).unwrap();
    assert_sample(&sb);
}

#[test]
fn zstd_layer() {
    let sb = Sandbox::new();
    let report = sb.unpack_with(&zstd(&sample()), Compression::Zstd).unwrap();
    assert_sample(&sb);
    assert_eq!(report.bytes, 8 + 300_000);
}

#[test]
fn modes_including_setuid_setgid_sticky() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'0', "suid").mode(0o4755).data("x"))
        .add(Spec::new(b'0', "sgid").mode(0o2711).data("x"))
        .add(Spec::new(b'5', "tmp").mode(0o1777))
        .add(Spec::new(b'5', "locked").mode(0o500))
        .add(Spec::new(b'0', "locked/inside").mode(0o400).data("x"))
        .add(Spec::new(b'0', "plain").mode(0o640).data("x"))
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let mode = |p: &str| {
        fs::symlink_metadata(sb.path(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o4755);
    assert_eq!(mode("sgid"), 0o2711);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("locked"), 0o500);
    assert_eq!(mode("locked/inside"), 0o400);
    assert_eq!(mode("plain"), 0o640);
}

#[test]
fn setuid_survives_a_non_root_owner() {
    // chown clears setuid bits, so the mode has to be applied after the owner.
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(
            Spec::new(b'0', "suid")
                .mode(0o6755)
                .owner(1000, 1000)
                .data("x"),
        )
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let meta = fs::metadata(sb.path("suid")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o6755);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
}

#[test]
fn numeric_ownership() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'5', "home").owner(1234, 5678))
        .add(Spec::new(b'0', "home/file").owner(4321, 8765).data("x"))
        .add(Spec::new(b'2', "home/link").link("file").owner(11, 12))
        .add(Spec::new(b'6', "home/pipe").owner(13, 14))
        // PAX ids beyond what an octal header field holds.
        .add(
            Spec::new(b'0', "big-ids")
                .pax("uid", "3000000000")
                .pax("gid", "3000000001")
                .data("x"),
        )
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let ids = |p: &str| {
        let m = fs::symlink_metadata(sb.path(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids("home"), (1234, 5678));
    assert_eq!(ids("home/file"), (4321, 8765));
    assert_eq!(ids("home/link"), (11, 12));
    assert_eq!(ids("home/pipe"), (13, 14));
    assert_eq!(ids("big-ids"), (3_000_000_000, 3_000_000_001));
}

#[test]
fn modification_times() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'5', "dir").mtime(1_000_000))
        // Children written after the directory must not change its mtime.
        .add(Spec::new(b'0', "dir/file").mtime(2_000_000).data("x"))
        .add(Spec::new(b'2', "dir/link").link("file").mtime(3_000_000))
        .add(
            Spec::new(b'0', "precise")
                .pax("mtime", "1700000000.123456789")
                .data("x"),
        )
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let mtime = |p: &str| {
        let m = fs::symlink_metadata(sb.path(p)).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    assert_eq!(mtime("dir"), (1_000_000, 0));
    assert_eq!(mtime("dir/file"), (2_000_000, 0));
    assert_eq!(mtime("dir/link"), (3_000_000, 0));
    assert_eq!(mtime("precise"), (1_700_000_000, 123_456_789));
}

#[test]
fn symlinks_are_stored_verbatim() {
    let sb = Sandbox::new();
    let long = format!("/{}", "x/".repeat(100));
    let tar = Tar::new()
        .symlink("abs", "/etc/passwd")
        .symlink("up", "../../../../etc/shadow")
        .symlink("dangling", "does/not/exist")
        .symlink("self", "self")
        .symlink("long", &long)
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let target = |p: &str| {
        fs::read_link(sb.path(p))
            .unwrap()
            .into_os_string()
            .into_string()
            .unwrap()
    };
    assert_eq!(target("abs"), "/etc/passwd");
    assert_eq!(target("up"), "../../../../etc/shadow");
    assert_eq!(target("dangling"), "does/not/exist");
    assert_eq!(target("self"), "self");
    assert_eq!(target("long"), long);
    sb.assert_nothing_outside();
}

#[test]
fn hardlinks_share_an_inode() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("bin")
        .add(Spec::new(b'0', "bin/busybox").mode(0o755).data("BB"))
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("/bin/ls", "./bin/busybox")
        .symlink("bin/link", "busybox")
        .hardlink("bin/link2", "bin/link")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let ino = |p: &str| fs::symlink_metadata(sb.path(p)).unwrap().ino();
    assert_eq!(ino("bin/sh"), ino("bin/busybox"));
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
    assert_eq!(fs::metadata(sb.path("bin/busybox")).unwrap().nlink(), 3);
    // A hard link to a symlink links the symlink itself.
    assert_eq!(ino("bin/link2"), ino("bin/link"));
    assert!(fs::symlink_metadata(sb.path("bin/link2"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn fifo_is_created() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'6', "run/pipe").mode(0o620))
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let meta = fs::symlink_metadata(sb.path("run/pipe")).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o620);
}

#[test]
fn device_nodes_are_skipped_and_reported() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("dev")
        .add(Spec::new(b'3', "dev/null").dev(1, 3).mode(0o666))
        .add(Spec::new(b'4', "dev/sda").dev(8, 0).mode(0o660))
        .file("after", "still unpacked")
        .finish();
    let report = sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert!(!sb.path("dev/null").exists());
    assert!(!sb.path("dev/sda").exists());
    assert_eq!(fs::read(sb.path("after")).unwrap(), b"still unpacked");
    assert_eq!(report.entries, 4);
    assert_eq!(report.skipped.len(), 2);
    assert!(
        report.skipped[0].starts_with("dev/null: character device"),
        "{:?}",
        report.skipped
    );
    assert!(
        report.skipped[1].starts_with("dev/sda: block device"),
        "{:?}",
        report.skipped
    );
}

#[test]
fn directory_replaced_by_file() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("thing")
        .dir("thing/deep/er")
        .file("thing/deep/er/file", "x")
        .symlink("thing/link", "/")
        .file("thing", "now a file")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let meta = fs::symlink_metadata(sb.path("thing")).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs::read(sb.path("thing")).unwrap(), b"now a file");
}

#[test]
fn directory_replaced_by_symlink_and_back() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("a")
        .file("a/x", "x")
        .symlink("a", "/somewhere")
        .file("b", "file")
        .add(Spec::new(b'5', "b").mode(0o711))
        .file("b/inside", "y")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert!(fs::symlink_metadata(sb.path("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    let b = fs::symlink_metadata(sb.path("b")).unwrap();
    assert!(b.is_dir());
    assert_eq!(b.permissions().mode() & 0o7777, 0o711);
    assert_eq!(fs::read(sb.path("b/inside")).unwrap(), b"y");
}

#[test]
fn later_entry_replaces_earlier_one() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("f", "first")
        .file("f", "second")
        .add(Spec::new(b'5', "d").mode(0o700).mtime(5))
        .add(Spec::new(b'5', "d").mode(0o755).mtime(6))
        .file("d/keep", "kept")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(fs::read(sb.path("f")).unwrap(), b"second");
    let d = fs::metadata(sb.path("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o755);
    assert_eq!(d.mtime(), 6);
    assert_eq!(fs::read(sb.path("d/keep")).unwrap(), b"kept");
}

#[test]
fn user_xattrs_are_applied_and_others_refused() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(
            Spec::new(b'0', "file")
                .pax("SCHILY.xattr.user.greeting", "hello")
                .pax("SCHILY.xattr.trusted.overlay.opaque", "y")
                .data("x"),
        )
        .add(Spec::new(b'5', "dir").pax("SCHILY.xattr.user.dir", "d"))
        .add(
            Spec::new(b'2', "link")
                .link("file")
                .pax("SCHILY.xattr.user.onlink", "l"),
        )
        .finish();
    let report = sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(
        xattr::get(sb.path("file"), "user.greeting")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr::get(sb.path("file"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(sb.path("dir"), "user.dir").unwrap().as_deref(),
        Some(&b"d"[..])
    );
    let joined = report.skipped.join("\n");
    assert!(
        joined.contains("file: xattr trusted.overlay.opaque not set"),
        "{joined}"
    );
    assert!(
        joined.contains("link: xattr user.onlink not set on a symlink"),
        "{joined}"
    );
}

#[test]
fn file_capabilities_survive_chown() {
    // security.capability is cleared by chown; it must be set after the owner.
    // VFS v2 capability blob: cap_net_raw (bit 13) permitted + effective flag.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(
            Spec::new(b'0', "ping")
                .mode(0o755)
                .owner(0, 0)
                .pax("SCHILY.xattr.security.capability", &cap)
                .data("ELF"),
        )
        .finish();
    let report = sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let got = xattr::get(sb.path("ping"), "security.capability").unwrap();
    match got {
        Some(value) => assert_eq!(value, cap),
        // Filesystems or hosts that refuse it report it instead.
        None => assert!(report
            .skipped
            .iter()
            .any(|s| s.contains("security.capability"))),
    }
}

#[test]
fn whiteouts_are_kept_as_files() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("etc")
        .file("etc/.wh.hosts", "")
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", "")
        .file(".wh.tmp", "")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    for p in ["etc/.wh.hosts", "var/cache/.wh..wh..opq", ".wh.tmp"] {
        let meta = fs::symlink_metadata(sb.path(p)).unwrap();
        assert!(meta.is_file() && meta.len() == 0, "{p}");
    }
}

#[test]
fn implicit_parents_are_created_0755() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("a/b/c/file", "x").finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    for p in ["a", "a/b", "a/b/c"] {
        let meta = fs::symlink_metadata(sb.path(p)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{p}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
    let root = fs::metadata(&sb.layer).unwrap();
    assert_eq!(root.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn root_entry_sets_layer_root_metadata() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'5', "./").mode(0o751).mtime(42))
        .file("f", "x")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    let root = fs::metadata(&sb.layer).unwrap();
    assert_eq!(root.permissions().mode() & 0o7777, 0o751);
    assert_eq!(root.mtime(), 42);
}

#[test]
fn small_sparse_file_has_holes_and_right_content() {
    let sb = Sandbox::new();
    let size: u64 = 64 << 20;
    let tar = Tar::new()
        .sparse(
            "sparse",
            size,
            &[(0, vec![b'a'; 512]), (size - 3, b"end".to_vec())],
        )
        .finish();
    let report = sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(report.bytes, size);
    let meta = fs::metadata(sb.path("sparse")).unwrap();
    assert_eq!(meta.len(), size);
    // Far fewer blocks than 64 MiB worth: the hole was not written.
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    let content = fs::read(sb.path("sparse")).unwrap();
    assert_eq!(&content[..512], &[b'a'; 512][..]);
    assert!(content[512..content.len() - 3].iter().all(|&b| b == 0));
    assert_eq!(&content[content.len() - 3..], b"end");
}

#[test]
fn long_names_and_old_style_directories() {
    let sb = Sandbox::new();
    let long_dir = format!("{}/{}", "d".repeat(90), "e".repeat(90));
    let tar = Tar::new()
        .file(format!("{long_dir}/file"), "long")
        .add(
            Spec::new(b'0', "p")
                .pax("path", format!("{long_dir}/pax"))
                .data("pax"),
        )
        .add(Spec::new(b'\0', "olddir/").mode(0o750))
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(
        fs::read(sb.path(&format!("{long_dir}/file"))).unwrap(),
        b"long"
    );
    assert_eq!(
        fs::read(sb.path(&format!("{long_dir}/pax"))).unwrap(),
        b"pax"
    );
    let old = fs::symlink_metadata(sb.path("olddir")).unwrap();
    assert!(old.is_dir());
    assert_eq!(old.permissions().mode() & 0o7777, 0o750);
}

#[test]
fn pax_global_header_is_ignored() {
    let sb = Sandbox::new();
    let mut tar = Tar::new();
    tar.raw(
        b'g',
        b"pax_global_header",
        b"",
        0o644,
        0,
        &unpack_support::pax_record("comment", b"made by git archive"),
    );
    tar.file("f", "x");
    let report = sb.unpack(&tar.finish(), &UnpackLimits::default()).unwrap();
    assert_eq!(report.entries, 2);
    assert!(!sb.path("pax_global_header").exists());
    assert_eq!(fs::read(sb.path("f")).unwrap(), b"x");
}

#[test]
fn trailing_data_after_end_marker_counts_against_the_total() {
    let sb = Sandbox::new();
    let mut tar = Tar::new().file("f", "x").finish();
    tar.extend(vec![0u8; 10 << 20]);
    let limits = UnpackLimits {
        max_total_bytes: 1 << 20,
        ..UnpackLimits::default()
    };
    let err = sb.unpack(&tar, &limits).unwrap_err();
    assert!(
        matches!(err, msb_oci::unpack::UnpackError::LayerTooLarge { .. }),
        "{err:?}"
    );
    // Ordinary record padding is fine.
    let sb = Sandbox::new();
    let mut tar = Tar::new().file("f", "x").finish();
    tar.extend(vec![0u8; 8192]);
    sb.unpack(&tar, &limits).unwrap();
}
