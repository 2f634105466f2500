//! Merging unpacked layers into a view of hard links: replacement, whiteouts, opaque
//! directories, symlink/directory conflicts, and directory metadata.

mod unpack_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use msb_oci::unpack::{unpack_layer, Compression, UnpackLimits};
use msb_oci::view::{build_view, ViewError, ViewReport};
use unpack_support::{ino, walk, Spec, Tar};

/// Layers unpacked from archives into one temporary directory, plus a view target.
struct Image {
    base: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

impl Image {
    fn new(archives: &[Vec<u8>]) -> Image {
        let base = tempfile::tempdir().unwrap();
        let mut layers = Vec::new();
        for (i, tar) in archives.iter().enumerate() {
            let dir = base.path().join(format!("layer{i}"));
            fs::create_dir(&dir).unwrap();
            unpack_layer(&tar[..], Compression::None, &dir, &UnpackLimits::default()).unwrap();
            layers.push(dir);
        }
        fs::create_dir(base.path().join("view")).unwrap();
        Image { base, layers }
    }

    fn view(&self) -> PathBuf {
        self.base.path().join("view")
    }

    fn build(&self) -> Result<ViewReport, ViewError> {
        let refs: Vec<&Path> = self.layers.iter().map(PathBuf::as_path).collect();
        build_view(&refs, &self.view())
    }

    fn layer(&self, i: usize, rel: &str) -> PathBuf {
        self.layers[i].join(rel)
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.view().join(rel)
    }
}

fn three_layers() -> Image {
    let l0 = Tar::new()
        .add(Spec::new(b'5', "etc").mode(0o755).mtime(1000))
        .file("etc/passwd", "root:x:0:0")
        .file("etc/hosts", "127.0.0.1 localhost")
        .dir("bin")
        .file("bin/sh", "sh v1")
        .dir("usr/lib")
        .file("usr/lib/libc.so", "libc")
        .symlink("lib", "usr/lib")
        .dir("var/cache/apt")
        .file("var/cache/apt/pkg", "pkg")
        .file("var/log", "log")
        .dir("opt/data")
        .file("opt/data/old1", "1")
        .dir("opt/data/olddir")
        .file("opt/data/olddir/f", "f")
        .symlink("opt/link", "data/old1")
        .finish();
    let l1 = Tar::new()
        .dir("etc")
        .file("etc/passwd", "root:x:0:0\nuser:x:1000:1000")
        .file("etc/.wh.hosts", "")
        .dir("var")
        .file("var/.wh.cache", "")
        .dir("opt/data")
        .file("opt/data/.wh..wh..opq", "")
        .file("opt/data/new", "n")
        .dir("lib")
        .file("lib/ld.so", "ld")
        .finish();
    let l2 = Tar::new()
        .add(Spec::new(b'5', "etc").mode(0o700).owner(7, 8).mtime(3000))
        .file("etc/motd", "hi")
        .dir("bin")
        .file("bin/.wh.sh", "")
        .add(Spec::new(b'0', "bin/sh").mode(0o755).data("sh v3"))
        .file("var/.wh.log", "")
        .finish();
    Image::new(&[l0, l1, l2])
}

#[test]
fn three_layer_merge() {
    let img = three_layers();
    let report = img.build().unwrap();

    // Replaced file: the top layer's copy, as a hard link to it.
    assert_eq!(
        fs::read_to_string(img.at("etc/passwd")).unwrap(),
        "root:x:0:0\nuser:x:1000:1000"
    );
    assert_eq!(ino(&img.at("etc/passwd")), ino(&img.layer(1, "etc/passwd")));
    // Whiteouts removed a file and a directory tree, and are not in the view.
    assert!(!img.at("etc/hosts").exists());
    assert!(!img.at("var/cache").exists());
    assert!(!img.at("var/log").exists());
    assert!(img.at("var").is_dir());
    // Opaque directory: only what the opaque layer put there.
    let mut data: Vec<_> = fs::read_dir(img.at("opt/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, ["new"]);
    // A lower symlink replaced by an upper directory; the symlink's target is untouched.
    let lib = fs::symlink_metadata(img.at("lib")).unwrap();
    assert!(lib.is_dir());
    assert_eq!(fs::read_to_string(img.at("lib/ld.so")).unwrap(), "ld");
    assert!(!img.at("usr/lib/ld.so").exists());
    assert!(!img.layer(0, "usr/lib/ld.so").exists());
    assert_eq!(
        fs::read_to_string(img.at("usr/lib/libc.so")).unwrap(),
        "libc"
    );
    // Whiteout and re-creation in the same layer: the new file.
    assert_eq!(fs::read_to_string(img.at("bin/sh")).unwrap(), "sh v3");
    assert_eq!(ino(&img.at("bin/sh")), ino(&img.layer(2, "bin/sh")));
    // Untouched lower files are links to the lowest layer.
    assert_eq!(
        ino(&img.at("usr/lib/libc.so")),
        ino(&img.layer(0, "usr/lib/libc.so"))
    );
    // Symlinks are linked as symlinks.
    let link = fs::symlink_metadata(img.at("opt/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(ino(&img.at("opt/link")), ino(&img.layer(0, "opt/link")));
    assert_eq!(
        fs::read_link(img.at("opt/link")).unwrap(),
        Path::new("data/old1")
    );

    // No whiteout survives anywhere.
    let all = walk(&img.view());
    assert!(all.iter().all(|p| !p.contains(".wh.")), "{all:?}");

    // Directory metadata from the topmost layer that has the directory.
    let etc = fs::metadata(img.at("etc")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o7777, 0o700);
    assert_eq!((etc.uid(), etc.gid()), (7, 8));
    assert_eq!(etc.mtime(), 3000);
    // Every view directory is a real directory, not a link.
    assert_ne!(ino(&img.at("etc")), ino(&img.layer(2, "etc")));

    // The report matches what is there.
    let dirs = all
        .iter()
        .filter(|p| fs::symlink_metadata(img.at(p)).unwrap().is_dir())
        .count() as u64;
    assert_eq!(
        report,
        ViewReport {
            files: all.len() as u64 - dirs,
            dirs
        }
    );
    assert_eq!(
        all,
        [
            "bin",
            "bin/sh",
            "etc",
            "etc/motd",
            "etc/passwd",
            "lib",
            "lib/ld.so",
            "opt",
            "opt/data",
            "opt/data/new",
            "opt/link",
            "usr",
            "usr/lib",
            "usr/lib/libc.so",
            "var",
        ]
    );
}

#[test]
fn layers_are_not_modified() {
    let img = three_layers();
    let before: Vec<Vec<String>> = img.layers.iter().map(|l| walk(l)).collect();
    img.build().unwrap();
    let after: Vec<Vec<String>> = img.layers.iter().map(|l| walk(l)).collect();
    assert_eq!(before, after);
    assert!(img.layer(1, "etc/.wh.hosts").exists());
}

#[test]
fn lower_symlink_to_outside_is_never_traversed() {
    let outside = tempfile::tempdir().unwrap();
    let l0 = Tar::new()
        .symlink("lib", outside.path().as_os_str().as_encoded_bytes())
        .symlink("etc", outside.path().as_os_str().as_encoded_bytes())
        .finish();
    let l1 = Tar::new()
        .dir("lib")
        .file("lib/x", "x")
        .file("etc/.wh.passwd", "")
        .dir("etc/.wh..wh..opq")
        .finish();
    fs::write(outside.path().join("passwd"), "keep").unwrap();
    let img = Image::new(&[l0, l1]);
    img.build().unwrap();
    assert!(fs::symlink_metadata(img.at("lib")).unwrap().is_dir());
    assert!(fs::symlink_metadata(img.at("etc")).unwrap().is_dir());
    let names: Vec<_> = fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(fs::read(outside.path().join("passwd")).unwrap(), b"keep");
}

#[test]
fn upper_file_or_symlink_replaces_lower_directory() {
    let l0 = Tar::new()
        .dir("a/deep")
        .file("a/deep/f", "f")
        .dir("b")
        .file("b/g", "g")
        .finish();
    let l1 = Tar::new()
        .file("a", "now a file")
        .symlink("b", "/a")
        .finish();
    let img = Image::new(&[l0, l1]);
    let report = img.build().unwrap();
    assert_eq!(fs::read_to_string(img.at("a")).unwrap(), "now a file");
    assert!(fs::symlink_metadata(img.at("b"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(report, ViewReport { files: 2, dirs: 0 });
    // Later layers can put a directory back, with fresh contents.
    let l2 = Tar::new().dir("a").file("a/new", "n").finish();
    let img = Image::new(&[
        Tar::new().dir("a/deep").file("a/deep/f", "f").finish(),
        Tar::new().file("a", "file").finish(),
        l2,
    ]);
    img.build().unwrap();
    assert_eq!(walk(&img.view()), ["a", "a/new"]);
}

#[test]
fn whiteout_of_directory_then_recreated_in_a_later_layer() {
    let l0 = Tar::new()
        .add(Spec::new(b'5', "d").mode(0o750))
        .file("d/old", "o")
        .finish();
    let l1 = Tar::new().file(".wh.d", "").finish();
    let l2 = Tar::new()
        .add(Spec::new(b'5', "d").mode(0o705).mtime(77))
        .file("d/new", "n")
        .finish();
    let img = Image::new(&[l0, l1, l2]);
    img.build().unwrap();
    assert_eq!(walk(&img.view()), ["d", "d/new"]);
    let d = fs::metadata(img.at("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o705);
    assert_eq!(d.mtime(), 77);
}

#[test]
fn opaque_directory_keeps_its_own_layer_entries_and_subdirs() {
    let l0 = Tar::new()
        .dir("d/sub")
        .file("d/sub/lower", "l")
        .file("d/lower", "l")
        .finish();
    let l1 = Tar::new()
        .dir("d")
        .file("d/.wh..wh..opq", "")
        .dir("d/sub")
        .file("d/sub/upper", "u")
        .finish();
    let img = Image::new(&[l0, l1]);
    img.build().unwrap();
    assert_eq!(walk(&img.view()), ["d", "d/sub", "d/sub/upper"]);
}

#[test]
fn opaque_root_hides_everything_below() {
    let l0 = Tar::new().file("a", "a").dir("b").file("b/c", "c").finish();
    let l1 = Tar::new().file(".wh..wh..opq", "").file("z", "z").finish();
    let img = Image::new(&[l0, l1]);
    let report = img.build().unwrap();
    assert_eq!(walk(&img.view()), ["z"]);
    assert_eq!(report, ViewReport { files: 1, dirs: 0 });
}

#[test]
fn view_root_takes_the_top_layer_root_metadata() {
    let l0 = Tar::new()
        .add(Spec::new(b'5', "./").mode(0o700).mtime(1))
        .finish();
    let l1 = Tar::new()
        .add(Spec::new(b'5', "./").mode(0o755).mtime(2))
        .finish();
    let img = Image::new(&[l0, l1]);
    img.build().unwrap();
    let root = fs::metadata(img.view()).unwrap();
    assert_eq!(root.permissions().mode() & 0o7777, 0o755);
    assert_eq!(root.mtime(), 2);
}

#[test]
fn directory_xattrs_come_from_the_top_layer() {
    let l0 = Tar::new()
        .add(Spec::new(b'5', "d").pax("SCHILY.xattr.user.which", "lower"))
        .finish();
    let l1 = Tar::new()
        .add(Spec::new(b'5', "d").pax("SCHILY.xattr.user.which", "upper"))
        .finish();
    let img = Image::new(&[l0, l1]);
    img.build().unwrap();
    assert_eq!(
        xattr::get(img.at("d"), "user.which").unwrap().as_deref(),
        Some(&b"upper"[..])
    );
}

#[test]
fn invalid_whiteout_is_rejected() {
    // unpack_layer refuses these names; a layer directory made some other way must not make
    // the view remove its own parent.
    let img = Image::new(&[Tar::new().dir("d").file("d/keep", "k").finish()]);
    let evil = img.base.path().join("evil");
    fs::create_dir_all(evil.join("d")).unwrap();
    fs::write(evil.join("d/.wh.."), "").unwrap();
    let refs = [img.layers[0].as_path(), evil.as_path()];
    let err = build_view(&refs, &img.view()).unwrap_err();
    assert!(matches!(err, ViewError::InvalidWhiteout { .. }), "{err:?}");
    assert!(img.at("d/keep").exists());
}

#[test]
fn target_must_be_empty() {
    let img = Image::new(&[Tar::new().file("f", "f").finish()]);
    fs::write(img.at("stray"), "").unwrap();
    let err = img.build().unwrap_err();
    assert!(matches!(err, ViewError::TargetNotEmpty { .. }), "{err:?}");
}

#[test]
fn layer_on_another_filesystem_is_reported() {
    // The layer on the /dev/shm tmpfs, the view under Cargo's target directory:
    // two filesystems on any machine that has /dev/shm, which is where the test
    // needs them; anything else is a failure that says what is missing.
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "this test needs /dev/shm (a tmpfs) for a layer on another filesystem; it is missing"
    );
    let layer = tempfile::tempdir_in(shm).unwrap();
    let target = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_ne!(
        ino(layer.path()).0,
        ino(target.path()).0,
        "this test needs /dev/shm on another filesystem than {}; here both are one device",
        env!("CARGO_TARGET_TMPDIR")
    );
    fs::write(layer.path().join("f"), "f").unwrap();
    let err = build_view(&[layer.path()], target.path()).unwrap_err();
    assert!(matches!(err, ViewError::CrossDevice { .. }), "{err:?}");
}

#[test]
fn empty_image_gives_empty_view() {
    let img = Image::new(&[]);
    assert_eq!(img.build().unwrap(), ViewReport::default());
    assert!(walk(&img.view()).is_empty());
}
