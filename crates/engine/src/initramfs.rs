//! The guest's initramfs: the agent as `/init` plus the console device node it
//! needs before devtmpfs is mounted. Written once per agent build into the
//! cache, named by the agent's content hash, so every sandbox boots the same file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cpio::newc::{trailer, Builder};
use sha2::{Digest, Sha256};

const MODE_DIR: u32 = 0o040_000;
const MODE_CHAR: u32 = 0o020_000;
const MODE_FILE: u32 = 0o100_000;

/// Returns the cached initramfs for `agent`, writing it first if needed.
pub fn ensure(agent: &Path, cache_dir: &Path) -> io::Result<PathBuf> {
    let binary = fs::read(agent)?;
    let hash = Sha256::digest(&binary);
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(format!("{name}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(cache_dir)?;
    // A uniquely named temp file renamed into place: concurrent creators (threads
    // or processes) never see a partial file, and a failed write leaves nothing.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(cache_dir)?;
    write(&binary, temp.as_file_mut())?;
    temp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

fn write(agent: &[u8], file: &mut File) -> io::Result<()> {
    let mut out = BufWriter::new(file);
    let entry = |name: &str, mode: u32, ino: u32| Builder::new(name).mode(mode).ino(ino).nlink(1);
    entry("dev", MODE_DIR | 0o755, 1)
        .nlink(2)
        .write(&mut out, 0)
        .finish()?;
    entry("dev/console", MODE_CHAR | 0o600, 2)
        .rdev_major(5)
        .rdev_minor(1)
        .write(&mut out, 0)
        .finish()?;
    let len = u32::try_from(agent.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "agent too large"))?;
    let mut init = entry("init", MODE_FILE | 0o755, 3).write(&mut out, len);
    init.write_all(agent)?;
    init.finish()?;
    trailer(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpio::NewcReader;

    #[test]
    fn writes_once_and_holds_init_and_console() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        let binary = b"\x7fELF pretend agent";
        fs::write(&agent, binary).unwrap();
        let cache = dir.path().join("cache");
        let first = ensure(&agent, &cache).unwrap();
        let modified = fs::metadata(&first).unwrap().modified().unwrap();
        assert_eq!(ensure(&agent, &cache).unwrap(), first);
        assert_eq!(fs::metadata(&first).unwrap().modified().unwrap(), modified);

        let mut reader = File::open(&first).unwrap();
        let mut seen = vec![];
        loop {
            let entry = NewcReader::new(&mut reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let e = entry.entry();
            seen.push((
                e.name().to_string(),
                e.mode(),
                e.rdev_major(),
                e.file_size(),
            ));
            entry.finish().unwrap();
        }
        assert_eq!(
            seen,
            vec![
                ("dev".to_string(), MODE_DIR | 0o755, 0, 0),
                ("dev/console".to_string(), MODE_CHAR | 0o600, 5, 0),
                (
                    "init".to_string(),
                    MODE_FILE | 0o755,
                    0,
                    binary.len() as u32
                ),
            ]
        );
        // Another agent build gets another file.
        fs::write(&agent, b"\x7fELF another agent").unwrap();
        assert_ne!(ensure(&agent, &cache).unwrap(), first);
    }
}
