//! Feeds arbitrary bytes to the layer unpacker as an uncompressed tar stream, with small
//! limits, into a fresh directory that has an empty sibling. Whatever the bytes, unpacking
//! may fail but must not panic, must not create anything beside the layer directory or in
//! the sibling (a `../` or symlink escape would land there first), and every directory found
//! below the layer, walked without following symlinks, must really be inside it.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use msb_oci::unpack::{unpack_layer, Compression, UnpackLimits};

fn check_tree(root: &Path) {
    let canonical_root = fs::canonicalize(root).expect("canonical layer root");
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let real = fs::canonicalize(&dir).expect("canonical directory");
        assert!(
            real.starts_with(&canonical_root),
            "directory {dir:?} resolves to {real:?}, outside the layer"
        );
        for entry in fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            assert!(path.starts_with(root));
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let kind = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            assert!(
                !kind.is_block_device() && !kind.is_char_device() && !kind.is_socket(),
                "unexpected node {path:?}"
            );
            if kind.is_dir() {
                stack.push(path);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // tmpfs when there is one: each run creates and removes directories, which on a disk
    // mounted with `discard` costs milliseconds apiece.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let layer = base.path().join("layer");
    let outside = base.path().join("outside");
    fs::create_dir(&layer).expect("layer directory");
    fs::create_dir(&outside).expect("sibling directory");

    let limits = UnpackLimits {
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 256,
    };
    let _ = unpack_layer(data, Compression::None, &layer, &limits);

    assert!(
        fs::read_dir(&outside).expect("sibling").next().is_none(),
        "something was written beside the layer"
    );
    let mut names: Vec<_> = fs::read_dir(base.path())
        .expect("base")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["layer", "outside"]);
    check_tree(&layer);
});
