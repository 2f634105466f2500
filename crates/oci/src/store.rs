//! The image cache on disk, content-addressed and shared by every sandbox and
//! every process using the same state home.
//!
//! ```text
//! <root>/layers/<hex>/          one unpacked layer per layer digest
//! <root>/images/<hex>/rootfs/   one root filesystem view per manifest digest
//!                               (hard links into the layers)
//! <root>/tmp/                   downloads and unpacks in progress
//! <root>/locks/                 one lock file per digest being produced
//! ```
//!
//! Everything appears under its final name by rename, complete or not at all.
//! Producers take the digest's lock, so two pulls of one image (in one process
//! or two) download and unpack each layer once: the second finds it done.
//! The root is mode 0700: layers keep their setuid bits and owners, which must
//! not be reachable by other host users.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held lock; released on drop (or when the process dies).
pub struct Lock {
    _file: File,
}

impl Store {
    pub fn open(root: &Path) -> io::Result<Store> {
        for dir in ["layers", "images", "tmp", "locks"] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(digest))
    }

    pub fn image_dir(&self, manifest_digest: &str) -> PathBuf {
        self.root.join("images").join(hex_of(manifest_digest))
    }

    pub fn rootfs_dir(&self, manifest_digest: &str) -> PathBuf {
        self.image_dir(manifest_digest).join("rootfs")
    }

    /// A fresh, uniquely named path in the cache's temporary area (same
    /// filesystem as the final places, so results can be renamed into place).
    pub fn temp_path(&self, label: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.root.join("tmp").join(format!(
            "{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Waits for the exclusive lock named `name` (e.g. a digest).
    pub async fn lock(&self, name: &str) -> io::Result<Lock> {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", hex_of(name)));
        tokio::task::spawn_blocking(move || {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(Lock { _file: file })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Removes what interrupted producers left in the temporary area, skipping
    /// entries of live producers (they hold the matching lock).
    pub fn remove_temporary(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let path = entry?.path();
            let pid: Option<u32> = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').rev().nth(1))
                .and_then(|p| p.parse().ok());
            // Entries are named <label>-<pid>-<n>; keep those of running processes.
            if pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                continue;
            }
            remove_any(&path)?;
        }
        Ok(())
    }
}

/// Removes a file or a whole tree, whichever `path` is.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// The hex part of `algorithm:hex` (the whole string when there is no colon).
pub fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locks_exclude_each_other_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.lock("sha256:aa").await.unwrap();
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move { store.lock("sha256:aa").await.map(|_| ()) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap().unwrap();
    }

    #[test]
    fn leftovers_of_dead_producers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mine = store.temp_path("layer");
        fs::create_dir_all(&mine).unwrap();
        // A pid that cannot be running.
        let dead = store.root().join("tmp").join("layer-4194305-0");
        fs::write(&dead, b"partial").unwrap();
        store.remove_temporary().unwrap();
        assert!(mine.exists());
        assert!(!dead.exists());
        assert_eq!(
            fs::metadata(store.root()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
