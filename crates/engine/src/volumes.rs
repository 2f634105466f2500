//! Named volumes and the storage a sandbox mounts.
//!
//! A volume is a record in the state database (`volumes`) and a directory
//! `MSB_HOME/volumes/<name>/` holding either `data/` (kind `dir`: shared over
//! 9p, any number of sandboxes read and write it at once, no quota) or
//! `disk.img` (kind `disk`: a sparse ext4 image of exactly the quota, so the
//! guest's own filesystem says ENOSPC at the quota and `df` shows it; one
//! sandbox mounts it at a time, since two kernels cannot share an ext4).
//!
//! Who uses a volume: each sandbox records its mounts when it starts
//! (`volume_mounts`); a record counts only while that sandbox's runtime holds
//! its name lock, so a crashed sandbox never keeps a volume busy. Claims and
//! removals run in one database transaction each, so a removal and a start
//! cannot both succeed, nor two starts of one disk volume. QEMU's own image
//! lock backs the latter.
//!
//! Host safety: the host never interprets what a guest wrote. Shares use
//! `security_model=mapped-xattr` (guest owners, modes, device nodes and
//! symlinks are attributes of plain 0600/0700 host files); disk images are
//! opaque files the host only creates and deletes.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use msb_control::vm::StorageDevice;
use msb_protocol::{GuestMount, MountSource, UpperSpec};
use msb_state::{VolumeMount, VolumeRecord};

use crate::error::{CreateError, InvalidOption, VolumeError};
use crate::images::sandbox_alive;
use crate::lifecycle;
use crate::options::integer_in;
use crate::options::storage::{
    validate_volume_name, MountConfig, MountKind, PersistentRoot, MAX_SIZE_MIB, MIN_DISK_MIB,
};
use crate::settings::EngineSettings;

/// A persistent root's disk, in the sandbox directory (removed with it).
pub(crate) const ROOT_DISK: &str = "root.ext4";
const DATA_DIR: &str = "data";
const DISK_IMAGE: &str = "disk.img";
/// Serial of a persistent root's disk, as the agent looks it up.
const UPPER_SERIAL: &str = "msbupper";
/// Entries `usage` walks in a dir volume before it gives up counting.
const MAX_USAGE_ENTRIES: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    Dir,
    Disk,
}

impl VolumeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::Dir => "dir",
            VolumeKind::Disk => "disk",
        }
    }

    fn parse(kind: &str) -> Option<VolumeKind> {
        match kind {
            "dir" => Some(VolumeKind::Dir),
            "disk" => Some(VolumeKind::Disk),
            _ => None,
        }
    }
}

/// `Volume.create`'s options, as callers give them.
#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    pub name: String,
    pub quota_mib: Option<f64>,
    /// "dir" or "disk"; by default "disk" when there is a quota, else "dir".
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub kind: VolumeKind,
    pub quota_mib: Option<u32>,
    pub created_at_ms: i64,
    /// The directory (`dir`) or image file (`disk`) holding the contents.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Bytes the contents occupy on the host disk.
    pub used_bytes: u64,
    /// The quota in bytes, for a disk volume.
    pub capacity_bytes: Option<u64>,
}

fn volumes_dir(settings: &EngineSettings) -> PathBuf {
    settings.home.join("volumes")
}

fn info(settings: &EngineSettings, record: VolumeRecord) -> VolumeInfo {
    let kind = VolumeKind::parse(&record.kind).unwrap_or(VolumeKind::Dir);
    let dir = volumes_dir(settings).join(&record.name);
    VolumeInfo {
        path: match kind {
            VolumeKind::Dir => dir.join(DATA_DIR),
            VolumeKind::Disk => dir.join(DISK_IMAGE),
        },
        name: record.name,
        kind,
        quota_mib: record.quota_mib,
        created_at_ms: record.created_at_ms,
    }
}

async fn with_state<T: Send + 'static>(
    settings: &EngineSettings,
    f: impl FnOnce(&mut msb_state::State) -> msb_state::Result<T> + Send + 'static,
) -> Result<T, VolumeError> {
    lifecycle::on_state(settings.state_db(), VolumeError::io_error, f).await
}

/// Runs file work `what` on a blocking thread.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VolumeError::io_error(what, io::Error::other(e)))?
}

/// Creates a volume: the record first (which settles a race for the name),
/// then its files, made under a temporary name and renamed into place; a
/// failure forgets the record again.
pub async fn create(
    settings: &EngineSettings,
    options: VolumeOptions,
) -> Result<VolumeInfo, VolumeError> {
    validate_volume_name("name", &options.name)?;
    let kind = match options.kind.as_deref() {
        None if options.quota_mib.is_some() => VolumeKind::Disk,
        None => VolumeKind::Dir,
        Some(kind) => VolumeKind::parse(kind).ok_or_else(|| {
            InvalidOption::new("kind", format!("{kind:?} is not one of \"dir\", \"disk\""))
        })?,
    };
    let quota_mib = match (kind, options.quota_mib) {
        (VolumeKind::Dir, Some(_)) => {
            return Err(InvalidOption::new(
                "quotaMib",
                "a dir volume is a host directory, which the host cannot cap per volume: use \
                 kind \"disk\" (the default when quotaMib is given)",
            )
            .into())
        }
        (VolumeKind::Disk, None) => {
            return Err(InvalidOption::new(
                "quotaMib",
                "a disk volume is an ext4 image of exactly its quota: give quotaMib",
            )
            .into())
        }
        (VolumeKind::Disk, quota) => Some(integer_in(
            "quotaMib",
            quota,
            0,
            MIN_DISK_MIB,
            MAX_SIZE_MIB,
        )?),
        (VolumeKind::Dir, None) => None,
    };
    let record = VolumeRecord {
        name: options.name.clone(),
        kind: kind.as_str().to_string(),
        quota_mib,
        created_at_ms: msb_state::now_ms(),
    };
    let inserted = {
        let record = record.clone();
        with_state(settings, move |state| state.insert_volume(&record)).await?
    };
    if !inserted {
        return Err(VolumeError::Exists { name: options.name });
    }
    let dir = volumes_dir(settings).join(&options.name);
    let mkfs = settings.mkfs_ext4.clone();
    let built = blocking("create the volume", move || {
        build_volume(&dir, kind, quota_mib, &mkfs)
    })
    .await;
    if let Err(err) = built {
        let name = options.name.clone();
        let _ = with_state(settings, move |state| state.forget_volume(&name)).await;
        return Err(err);
    }
    Ok(info(settings, record))
}

fn build_volume(
    dir: &Path,
    kind: VolumeKind,
    quota_mib: Option<u32>,
    mkfs: &Path,
) -> Result<(), VolumeError> {
    let parent = dir.parent().expect("a volume directory has a parent");
    fs::create_dir_all(parent).map_err(VolumeError::io("create the volumes directory"))?;
    // No record named this volume a moment ago: whatever is here is left
    // over from a removal or creation that was cut short.
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(VolumeError::io("clear a leftover volume directory")(err))
        }
        _ => {}
    }
    let staging = parent.join(format!(
        ".{}.creating-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(VolumeError::io("create the volume directory"))?;
    let made = match (kind, quota_mib) {
        (VolumeKind::Disk, Some(mib)) => make_ext4(&staging.join(DISK_IMAGE), mib, mkfs),
        _ => fs::create_dir(staging.join(DATA_DIR))
            .map_err(VolumeError::io("create the volume's data directory")),
    };
    let renamed = made.and_then(|()| {
        fs::rename(&staging, dir).map_err(VolumeError::io("move the volume into place"))
    });
    if renamed.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    renamed
}

/// A sparse file of `size_mib` MiB formatted ext4 (no reserved blocks: the
/// whole quota is the guest's). The host only ever creates these; it never
/// mounts or parses one a guest has written.
pub(crate) fn make_ext4(path: &Path, size_mib: u32, mkfs: &Path) -> Result<(), VolumeError> {
    let file = fs::File::create(path).map_err(VolumeError::io("create the disk image"))?;
    file.set_len(u64::from(size_mib) << 20)
        .map_err(VolumeError::io("size the disk image"))?;
    drop(file);
    let output = std::process::Command::new(mkfs)
        .args(["-q", "-F", "-m", "0", "-E", "root_owner=0:0"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(VolumeError::MissingProgram {
            message: format!(
                "{} not found: disk volumes and persistent roots are formatted with mkfs.ext4 \
                 (Debian package e2fsprogs); MSB_MKFS_EXT4 names another program",
                mkfs.display()
            ),
        }),
        Err(err) => Err(VolumeError::io("run mkfs.ext4")(err)),
        Ok(out) if !out.status.success() => Err(VolumeError::Io {
            what: format!("mkfs.ext4 {}", path.display()),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }),
        Ok(_) => Ok(()),
    }
}

pub async fn get(settings: &EngineSettings, name: &str) -> Result<VolumeInfo, VolumeError> {
    validate_volume_name("name", name)?;
    let key = name.to_string();
    match with_state(settings, move |state| state.volume(&key)).await? {
        Some(record) => Ok(info(settings, record)),
        None => Err(VolumeError::NotFound {
            name: name.to_string(),
            field: Some("name".into()),
        }),
    }
}

pub async fn list(settings: &EngineSettings) -> Result<Vec<VolumeInfo>, VolumeError> {
    let records = with_state(settings, |state| state.volumes()).await?;
    Ok(records.into_iter().map(|r| info(settings, r)).collect())
}

/// Names of the running sandboxes among `mounts`.
fn live_users(settings: &EngineSettings, mounts: &[VolumeMount]) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| sandbox_alive(&settings.sandbox_dir(&m.sandbox)))
        .map(|m| m.sandbox.clone())
        .collect()
}

/// Deletes a volume and its contents; refused while a running sandbox mounts it.
pub async fn remove(settings: &EngineSettings, name: &str) -> Result<(), VolumeError> {
    validate_volume_name("name", name)?;
    let key = name.to_string();
    let probe = settings.clone();
    let outcome = with_state(settings, move |state| {
        state.remove_volume(&key, |mounts| {
            let users = live_users(&probe, mounts);
            if users.is_empty() {
                Ok(())
            } else {
                Err(users.join(", "))
            }
        })
    })
    .await?;
    match outcome {
        None => Err(VolumeError::NotFound {
            name: name.to_string(),
            field: Some("name".into()),
        }),
        Some(Err(sandboxes)) => Err(VolumeError::InUse {
            name: name.to_string(),
            sandboxes,
        }),
        Some(Ok(_)) => {
            let dir = volumes_dir(settings).join(name);
            blocking(
                "delete the volume's files",
                move || match fs::remove_dir_all(&dir) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        Err(VolumeError::io("delete the volume's files")(err))
                    }
                    _ => Ok(()),
                },
            )
            .await
        }
    }
}

/// Host disk space the volume's contents take (allocated blocks: a sparse
/// disk image counts only what was written).
pub async fn usage(settings: &EngineSettings, name: &str) -> Result<VolumeUsage, VolumeError> {
    let volume = get(settings, name).await?;
    blocking("measure the volume", move || {
        let used_bytes = match volume.kind {
            VolumeKind::Disk => {
                fs::metadata(&volume.path)
                    .map_err(VolumeError::io("read the disk image"))?
                    .blocks()
                    * 512
            }
            VolumeKind::Dir => allocated_bytes(&volume.path)?,
        };
        Ok(VolumeUsage {
            used_bytes,
            capacity_bytes: volume.quota_mib.map(|mib| u64::from(mib) << 20),
        })
    })
    .await
}

/// Sums allocated blocks under `root` without following symlinks, visiting
/// at most [`MAX_USAGE_ENTRIES`] entries.
fn allocated_bytes(root: &Path) -> Result<u64, VolumeError> {
    let mut total = 0u64;
    let mut seen = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(VolumeError::io("read the volume"))? {
            let entry = entry.map_err(VolumeError::io("read the volume"))?;
            seen += 1;
            if seen > MAX_USAGE_ENTRIES {
                return Err(VolumeError::Io {
                    what: format!("measure the volume: more than {MAX_USAGE_ENTRIES} entries"),
                    source: io::Error::other("too many entries"),
                });
            }
            let meta = entry
                .metadata()
                .map_err(VolumeError::io("read the volume"))?;
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// What a sandbox's storage options become: devices for the VMM, mounts and
/// the upper layer for the agent.
pub(crate) struct Storage {
    pub devices: Vec<StorageDevice>,
    pub mounts: Vec<GuestMount>,
    pub upper: UpperSpec,
}

/// Claims the sandbox's volumes (see the module doc) and prepares a
/// persistent root. The caller holds the sandbox's name lock, which is what
/// makes its own claim count as live to others from here on.
pub(crate) async fn claim(
    settings: &EngineSettings,
    sandbox: &str,
    dir: &Path,
    mounts: &[MountConfig],
    persistent_root: Option<&PersistentRoot>,
) -> Result<Storage, CreateError> {
    let wanted: Vec<(VolumeMount, String)> = mounts
        .iter()
        .filter_map(|m| match &m.kind {
            MountKind::Named(volume) => Some((
                VolumeMount {
                    sandbox: sandbox.to_string(),
                    volume: volume.clone(),
                    readonly: m.readonly,
                },
                format!("volumes[{:?}]", m.path),
            )),
            _ => None,
        })
        .collect();
    let probe = settings.clone();
    let key = sandbox.to_string();
    let claim: Vec<VolumeMount> = wanted.iter().map(|(m, _)| m.clone()).collect();
    let fields: Vec<String> = wanted.iter().map(|(_, f)| f.clone()).collect();
    let (records, outcome) = with_state(settings, move |state| {
        let mut records = Vec::new();
        let outcome = state.claim_volumes(&key, &claim, |volume, mount, others| {
            let field = fields[records.len()].clone();
            let Some(volume) = volume else {
                return Err(VolumeError::NotFound {
                    name: mount.volume.clone(),
                    field: Some(field),
                });
            };
            if volume.kind == VolumeKind::Disk.as_str() {
                if let Some(user) = live_users(&probe, others).into_iter().next() {
                    return Err(VolumeError::Busy {
                        name: volume.name.clone(),
                        sandbox: user,
                        field,
                    });
                }
            }
            records.push(volume.clone());
            Ok(())
        })?;
        Ok((records, outcome))
    })
    .await?;
    outcome?;

    let mut devices = Vec::new();
    let mut guest_mounts = Vec::new();
    let mut named = records.into_iter();
    for (index, mount) in mounts.iter().enumerate() {
        let id = format!("msbvol{index}");
        let source = match &mount.kind {
            MountKind::Named(_) => {
                let volume = info(settings, named.next().expect("one record per named mount"));
                match volume.kind {
                    VolumeKind::Dir => share(&mut devices, id, volume.path, mount.readonly),
                    VolumeKind::Disk => {
                        devices.push(StorageDevice::Disk {
                            serial: id.clone(),
                            path: volume.path,
                            readonly: mount.readonly,
                        });
                        MountSource::Disk { serial: id }
                    }
                }
            }
            MountKind::Bind(path) => {
                refuse_sensitive_bind(settings, path, &mount.path)?;
                share(&mut devices, id, path.clone(), mount.readonly)
            }
            MountKind::Tmpfs { size_mib } => MountSource::Tmpfs {
                size_mib: *size_mib,
            },
        };
        guest_mounts.push(GuestMount {
            path: mount.path.clone(),
            source,
            readonly: mount.readonly,
        });
    }

    let upper = match persistent_root {
        None => UpperSpec::Memory,
        Some(root) => {
            let mib = root.size_mib;
            let disk = root.path.clone().unwrap_or_else(|| dir.join(ROOT_DISK));
            if !disk.exists() {
                let mkfs = settings.mkfs_ext4.clone();
                let mut staging = disk.clone().into_os_string();
                staging.push(".new");
                let staging = PathBuf::from(staging);
                let target = disk.clone();
                blocking("create the persistent root", move || {
                    make_ext4(&staging, mib, &mkfs)?;
                    fs::rename(&staging, &target)
                        .map_err(VolumeError::io("move the root disk into place"))
                })
                .await?;
            }
            devices.push(StorageDevice::Disk {
                serial: UPPER_SERIAL.to_string(),
                path: disk,
                readonly: false,
            });
            UpperSpec::Disk {
                serial: UPPER_SERIAL.to_string(),
            }
        }
    };
    Ok(Storage {
        devices,
        mounts: guest_mounts,
        upper,
    })
}

fn share(
    devices: &mut Vec<StorageDevice>,
    tag: String,
    path: PathBuf,
    readonly: bool,
) -> MountSource {
    devices.push(StorageDevice::Share {
        tag: tag.clone(),
        path,
        readonly,
    });
    MountSource::Share { tag }
}

/// A bind mount exposes a host directory to the guest: not the host's root,
/// nor anything holding the state home (other sandboxes' files, volumes).
fn refuse_sensitive_bind(
    settings: &EngineSettings,
    path: &Path,
    guest_path: &str,
) -> Result<(), CreateError> {
    let field = format!("volumes[{guest_path:?}]");
    let path = path
        .canonicalize()
        .map_err(|e| InvalidOption::new(&field, format!("{}: {e}", path.display())))?;
    let home = settings
        .home
        .canonicalize()
        .unwrap_or_else(|_| settings.home.clone());
    if path == Path::new("/") {
        return Err(InvalidOption::new(field, "the host's root directory cannot be shared").into());
    }
    if home.starts_with(&path) || path.starts_with(&home) {
        return Err(InvalidOption::new(
            field,
            format!(
                "{} holds or lies in the microsandbox state directory",
                path.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// Where a stopped sandbox's persistent root is, if it has one.
pub(crate) fn root_disk(settings: &EngineSettings, name: &str) -> Option<PathBuf> {
    let disk = settings.sandbox_dir(name).join(ROOT_DISK);
    disk.exists().then_some(disk)
}
