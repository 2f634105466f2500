//! Crafted hostile layers: every one must fail with its precise error (or, for absolute paths,
//! land inside the layer) and leave everything outside the layer directory untouched.

mod unpack_support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msb_oci::unpack::{unpack_layer, Compression, Escape, UnpackError, UnpackLimits};
use unpack_support::{gzip, unique, Counting, Failing, Sandbox, Spec, Tar};

fn small_limits() -> UnpackLimits {
    UnpackLimits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_entries: 100,
    }
}

#[test]
fn dotdot_escape_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("../outside/evil", "x").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::PathEscape { ref path, via: Escape::DotDot } if path == "../outside/evil"),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn nested_dotdot_escape_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("a")
        .file("a/../../outside/evil", "x")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::DotDot,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn dotdot_in_long_gnu_name_is_rejected() {
    let sb = Sandbox::new();
    let name = format!("{}/{}../../outside/evil", "d".repeat(60), "../".repeat(20));
    let tar = Tar::new().file(name, "x").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::DotDot,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn dotdot_in_pax_path_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(
            Spec::new(b'0', "innocent")
                .pax("path", "../outside/evil")
                .data("x"),
        )
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::PathEscape { ref path, via: Escape::DotDot } if path == "../outside/evil"),
        "{err:?}"
    );
    sb.assert_nothing_outside();
    assert!(!sb.path("innocent").exists());
}

#[test]
fn absolute_path_lands_inside_the_layer() {
    let sb = Sandbox::new();
    let name = unique("abs");
    let host = Path::new("/etc").join(&name);
    let tar = Tar::new().file(format!("/etc/{name}"), "inside").finish();
    let result = sb.unpack(&tar, &UnpackLimits::default());
    let leaked = host.exists();
    if leaked {
        let _ = fs::remove_file(&host);
    }
    result.unwrap();
    assert!(!leaked, "wrote {host:?} on the host");
    assert_eq!(
        fs::read(sb.path(&format!("etc/{name}"))).unwrap(),
        b"inside"
    );
    sb.assert_nothing_outside();
}

#[test]
fn write_through_absolute_symlink_is_rejected() {
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let tar = Tar::new()
        .symlink("link", outside.path().as_os_str().as_encoded_bytes())
        .file("link/file", "pwned")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::PathEscape { ref path, via: Escape::Symlink } if path == "link/file"),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    sb.assert_nothing_outside();
}

#[test]
fn write_through_relative_symlink_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .symlink("link", "../outside")
        .file("link/file", "pwned")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn write_through_symlink_deeper_in_the_path_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("a")
        .symlink("a/b", "/")
        .file("a/b/c/d/file", "pwned")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn directory_through_symlink_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .symlink("link", "../outside")
        .dir("link/sub")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_nothing_outside();
}

#[test]
fn symlink_into_the_layer_is_not_followed_either() {
    // Even a symlink that stays inside the layer is never traversed.
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("real")
        .symlink("alias", "real")
        .file("alias/file", "x")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::PathEscape {
                via: Escape::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!sb.path("real/file").exists());
}

#[test]
fn file_over_symlink_replaces_the_symlink() {
    // The final component is never followed: a file entry over a symlink replaces the link.
    let sb = Sandbox::new();
    fs::write(sb.outside.join("victim"), "original").unwrap();
    let tar = Tar::new()
        .symlink("link", "../outside/victim")
        .file("link", "new")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(fs::read(sb.outside.join("victim")).unwrap(), b"original");
    let meta = fs::symlink_metadata(sb.path("link")).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs::read(sb.path("link")).unwrap(), b"new");
    fs::remove_file(sb.outside.join("victim")).unwrap();
    sb.assert_nothing_outside();
}

#[test]
fn directory_over_symlink_replaces_the_symlink() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .symlink("x", "../outside")
        .dir("x")
        .file("x/f", "inside")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert!(fs::symlink_metadata(sb.path("x")).unwrap().is_dir());
    assert_eq!(fs::read(sb.path("x/f")).unwrap(), b"inside");
    sb.assert_nothing_outside();
}

#[test]
fn file_over_hardlink_does_not_write_through_it() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("a", "original")
        .hardlink("h", "a")
        .file("h", "new")
        .finish();
    sb.unpack(&tar, &UnpackLimits::default()).unwrap();
    assert_eq!(fs::read(sb.path("a")).unwrap(), b"original");
    assert_eq!(fs::read(sb.path("h")).unwrap(), b"new");
}

#[test]
fn hardlink_outside_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new().hardlink("hard", "../../etc/passwd").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkEscape { ref path, ref target } if path == "hard" && target == "../../etc/passwd"),
        "{err:?}"
    );
    assert!(!sb.path("hard").exists());
    sb.assert_nothing_outside();
}

#[test]
fn hardlink_absolute_target_is_layer_relative() {
    // `/etc/passwd` means the layer's etc/passwd, which this layer lacks.
    let sb = Sandbox::new();
    let tar = Tar::new().hardlink("hard", "/etc/passwd").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkMissing { .. }),
        "{err:?}"
    );
    assert!(!sb.path("hard").exists());
}

#[test]
fn hardlink_through_symlink_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .symlink("etc", "/etc")
        .hardlink("hard", "etc/passwd")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::HardlinkEscape { .. }), "{err:?}");
    assert!(!sb.path("hard").exists());
    sb.assert_nothing_outside();
}

#[test]
fn hardlink_to_missing_target_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("dir")
        .hardlink("hard", "dir/nothing-here")
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkMissing { ref target, .. } if target == "dir/nothing-here"),
        "{err:?}"
    );
    assert!(!sb.path("hard").exists());
}

#[test]
fn hardlink_to_directory_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new().dir("dir").hardlink("hard", "dir").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkToDirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn giant_sparse_file_is_rejected_before_writing() {
    let sb = Sandbox::new();
    let tib: u64 = 1 << 40;
    let tar = Tar::new()
        .sparse("huge", tib, &[(tib - 512, vec![b'z'; 512])])
        .finish();
    let limits = UnpackLimits {
        max_file_bytes: 1 << 30,
        ..UnpackLimits::default()
    };
    let started = Instant::now();
    let err = sb.unpack(&tar, &limits).unwrap_err();
    assert!(
        matches!(err, UnpackError::FileTooLarge { ref path, size, max } if path == "huge" && size == tib && max == 1 << 30),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!sb.path("huge").exists());
    sb.assert_nothing_outside();
}

#[test]
fn giant_sparse_file_is_rejected_by_default_limits() {
    let sb = Sandbox::new();
    let tib: u64 = 1 << 40;
    let tar = Tar::new()
        .sparse("huge", tib, &[(0, vec![b'a'; 512]), (tib - 1, vec![b'z'])])
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::FileTooLarge { size, .. } if size == tib),
        "{err:?}"
    );
    assert!(!sb.path("huge").exists());
}

#[test]
fn too_many_entries_is_rejected() {
    let sb = Sandbox::new();
    let mut tar = Tar::new();
    for i in 0..1000 {
        tar.file(format!("f{i}"), "");
    }
    let limits = UnpackLimits {
        max_entries: 50,
        ..UnpackLimits::default()
    };
    let err = sb.unpack(&tar.finish(), &limits).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { max: 50 }),
        "{err:?}"
    );
    let created = fs::read_dir(&sb.layer).unwrap().count();
    assert_eq!(created, 50);
    sb.assert_nothing_outside();

    // Exactly at the limit is fine.
    let sb = Sandbox::new();
    let mut tar = Tar::new();
    for i in 0..50 {
        tar.file(format!("f{i}"), "");
    }
    assert_eq!(sb.unpack(&tar.finish(), &limits).unwrap().entries, 50);
}

#[test]
fn file_over_max_file_bytes_stops_at_its_header() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("small", "ok")
        .file("big", vec![0u8; 64 << 20])
        .finish();
    let count = Arc::new(AtomicU64::new(0));
    let reader = Counting {
        inner: &tar[..],
        count: Arc::clone(&count),
    };
    let err = unpack_layer(reader, Compression::None, &sb.layer, &small_limits()).unwrap_err();
    assert!(
        matches!(err, UnpackError::FileTooLarge { ref path, size, max } if path == "big" && size == 64 << 20 && max == 256 << 10),
        "{err:?}"
    );
    // Rejected from the header: nowhere near the 64 MiB of content was read.
    assert!(count.load(Ordering::Relaxed) < 1 << 20);
    assert!(!sb.path("big").exists());
    assert_eq!(fs::read(sb.path("small")).unwrap(), b"ok");
    sb.assert_nothing_outside();
}

#[test]
fn gzip_bomb_is_rejected_quickly() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("bomb", vec![0u8; 256 << 20]).finish();
    let compressed = gzip(&tar);
    assert!(compressed.len() < 1 << 20);
    let started = Instant::now();
    let err = unpack_layer(
        &compressed[..],
        Compression::Gzip,
        &sb.layer,
        &small_limits(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::FileTooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!sb.path("bomb").exists());
}

#[test]
fn total_over_max_total_bytes_is_rejected() {
    let sb = Sandbox::new();
    let mut tar = Tar::new();
    for i in 0..10 {
        tar.file(format!("f{i}"), vec![b'x'; 200 << 10]);
    }
    let err = sb.unpack(&tar.finish(), &small_limits()).unwrap_err();
    assert!(
        matches!(err, UnpackError::LayerTooLarge { max } if max == 1 << 20),
        "{err:?}"
    );
    let written: u64 = fs::read_dir(&sb.layer)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(written <= 1 << 20, "wrote {written} bytes");
    // Five files fit, the sixth is refused from its header.
    assert_eq!(written, 5 * (200 << 10));
    sb.assert_nothing_outside();
}

#[test]
fn huge_pax_header_is_rejected() {
    let sb = Sandbox::new();
    let mut records = Vec::new();
    while records.len() < 8 << 20 {
        records.extend(unpack_support::pax_record("comment", &[b'a'; 60_000]));
    }
    let mut tar = Tar::new();
    tar.raw(b'x', b"././@PaxHeader", b"", 0o644, 0, &records);
    tar.file("f", "x");
    let compressed = gzip(&tar.finish());
    let err = unpack_layer(
        &compressed[..],
        Compression::Gzip,
        &sb.layer,
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::HeaderTooLarge { .. }), "{err:?}");
}

#[test]
fn huge_gnu_long_name_is_rejected() {
    let sb = Sandbox::new();
    let mut tar = Tar::new();
    tar.raw(b'L', b"././@LongLink", b"", 0o644, 0, &vec![b'n'; 16 << 20]);
    tar.file("f", "x");
    let compressed = gzip(&tar.finish());
    let err = unpack_layer(
        &compressed[..],
        Compression::Gzip,
        &sb.layer,
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::HeaderTooLarge { .. }), "{err:?}");
}

#[test]
fn whiteout_of_dotdot_is_rejected() {
    let sb = Sandbox::new();
    for name in ["dir/.wh..", "dir/.wh...", ".wh."] {
        let tar = Tar::new().dir("dir").file(name, "").finish();
        let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
        assert!(
            matches!(err, UnpackError::InvalidPath { .. }),
            "{name}: {err:?}"
        );
        fs::remove_dir_all(&sb.layer).unwrap();
        fs::create_dir(&sb.layer).unwrap();
    }
}

#[test]
fn nul_in_pax_path_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'0', "x").pax("path", b"a\0b").data("x"))
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err:?}");
}

#[test]
fn device_with_escaping_path_is_still_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'3', "../outside/null").dev(1, 3))
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::PathEscape { .. }), "{err:?}");
    sb.assert_nothing_outside();
}

#[test]
fn owner_minus_one_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .add(Spec::new(b'0', "f").owner(u64::from(u32::MAX), 0))
        .finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::InvalidOwner { id, .. } if id == u64::from(u32::MAX)),
        "{err:?}"
    );
}

#[test]
fn unknown_entry_type_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new().add(Spec::new(b'V', "volume-label")).finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::UnsupportedEntry { kind: b'V', .. }),
        "{err:?}"
    );
}

#[test]
fn parent_that_is_a_file_is_rejected() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("a", "x").file("a/b", "y").finish();
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::ParentNotDirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn corrupt_gzip_is_a_decompression_error() {
    let sb = Sandbox::new();
    let mut data = gzip(&Tar::new().file("f", vec![b'q'; 100_000]).finish());
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let err = sb.unpack_with(&data, Compression::Gzip).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Decompress {
                compression: "gzip",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn corrupt_zstd_is_a_decompression_error() {
    let sb = Sandbox::new();
    let err = sb
        .unpack_with(b"definitely not zstd", Compression::Zstd)
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Decompress {
                compression: "zstd",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_gzip_is_a_decompression_error() {
    let sb = Sandbox::new();
    let data = gzip(&Tar::new().file("f", vec![b'q'; 100_000]).finish());
    let err = sb
        .unpack_with(&data[..data.len() - 20], Compression::Gzip)
        .unwrap_err();
    assert!(matches!(err, UnpackError::Decompress { .. }), "{err:?}");
}

#[test]
fn truncated_tar_is_malformed() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("f", vec![b'q'; 10_000]).unterminated();
    let err = sb
        .unpack(&tar[..4096], &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, UnpackError::Malformed { .. }), "{err:?}");
}

#[test]
fn bad_checksum_is_malformed() {
    let sb = Sandbox::new();
    let mut tar = Tar::new().file("f", "x").finish();
    tar[0] ^= 1;
    let err = sb.unpack(&tar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Malformed { .. }), "{err:?}");
}

#[test]
fn reader_failure_is_a_read_error() {
    let sb = Sandbox::new();
    let data = gzip(&Tar::new().file("f", vec![b'q'; 1 << 20]).finish());
    let ok = data.len() / 2;
    let reader = Failing { data, pos: 0, ok };
    let err = unpack_layer(
        reader,
        Compression::Gzip,
        &sb.layer,
        &UnpackLimits::default(),
    )
    .unwrap_err();
    match err {
        UnpackError::Read { source } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset)
        }
        other => panic!("{other:?}"),
    }
}
