//! Template snapshots: boot once per machine shape, restore many.
//!
//! Everything a guest does before the agent's `Init` is the same for every
//! sandbox of one shape (kernel, initramfs, CPUs, memory, kernel arguments and
//! the device layout; share paths are host-side and do not count). So the first
//! sandbox of a shape boots a separate *template* VM until its agent greets the
//! host, saves it ([`msb_vmm::Controller::save`]) and ends it; that sandbox and
//! every later one start a new VM from the saved state instead of booting the
//! kernel, and send their own `Init`. A restored guest gets fresh entropy and
//! the clock in `Init` (the agent reseeds its generator before anything runs).
//!
//! ```text
//! <dir>/<key>/        state (device state), ram (guest memory), meta.json,
//!                     vmm.log (QEMU's messages while making it)
//! <dir>/<key>.lock    held while the template is made: one maker, others wait
//! <dir>/<key>.failed  why the last making failed; no retry for FAILED_BACKOFF
//! ```
//!
//! `<key>` hashes what the backend says the saved state depends on
//! ([`msb_vmm::Backend::template_identity`]), files' sizes and times included,
//! so a new kernel, agent or QEMU makes a new template. A template is made in a
//! directory of its own and renamed into place whole; `meta.json` records the
//! files' inode, size and modification time, and a template whose files differ,
//! or that is older than the policy's age, is not used. Whatever goes wrong with
//! a template, the sandbox boots cold: snapshots only ever cost time.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use msb_control::vm::{Accel, VmSpec};
use msb_control::SnapshotPolicy;
use msb_protocol::{check_version, Envelope, FrameCodec, GuestMessage, Hello, HostMessage};
use msb_vmm::{Backend, Controller, GuestLinks, Start};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::relay::{exit_report, vmm_tail};

/// Version of `meta.json`'s layout.
const META_FORMAT: u32 = 1;

/// After a template could not be made, its shape boots cold for this long
/// before another try (an agent that never greets would cost a boot each time).
const FAILED_BACKOFF: Duration = Duration::from_secs(600);

/// How often a creator waiting for another's template looks at the lock.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// How long QEMU gets to exit after `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A usable template, its files open.
pub struct Template {
    pub key: String,
    /// The agent's greeting when the template was saved: a restored agent has
    /// greeted already and waits for `Init`.
    pub hello: Hello,
    pub ram: File,
    pub state: File,
    /// What the template ran on; its clones run on the same.
    pub accel: Accel,
    /// How long making it took, when this call made it.
    pub built_in: Option<Duration>,
    /// Why the template this one replaced could not be used.
    pub replaced: Option<String>,
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    key: String,
    created_unix_s: u64,
    hello: Hello,
    accel: Accel,
    state: Stamp,
    ram: Stamp,
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_s: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
        }
    }
}

pub struct Templates {
    policy: SnapshotPolicy,
    backend: Box<dyn Backend>,
}

impl Templates {
    pub fn new(policy: SnapshotPolicy, backend: Box<dyn Backend>) -> Templates {
        Templates { policy, backend }
    }

    /// The template for `spec`, made first if there is none. `Err` says why
    /// this VM boots cold instead.
    pub async fn prepare(&self, spec: &VmSpec, timeout: Duration) -> Result<Template, String> {
        let identity = self
            .backend
            .template_identity(spec)
            .ok_or("the VM has a block device")?;
        let key = hex(&Sha256::digest(identity.as_bytes())[..12]);
        // A template that is there but cannot be used is made again, and says why.
        let unusable = match self.load(&key) {
            Ok(template) => return Ok(template),
            Err(reason) => self.template_dir(&key).exists().then_some(reason),
        };
        if let Some(reason) = self.failed_recently(&key) {
            return Err(format!("making the template failed recently: {reason}"));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.policy.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.policy.dir.display()))?;
        let deadline = Instant::now() + timeout;
        let _lock = lock(&self.policy.dir.join(format!("{key}.lock")), deadline).await?;
        // Whoever held the lock may have made it meanwhile, or failed to.
        if let Ok(template) = self.load(&key) {
            return Ok(template);
        }
        if let Some(reason) = self.failed_recently(&key) {
            return Err(format!("making the template failed: {reason}"));
        }
        let started = Instant::now();
        match self.make(&key, spec, deadline).await {
            Ok(()) => {
                let _ = std::fs::remove_file(self.failed_marker(&key));
                self.remove_expired(&key);
            }
            Err(reason) => {
                let _ = std::fs::write(self.failed_marker(&key), &reason);
                return Err(format!("cannot make the template: {reason}"));
            }
        }
        let mut template = self.load(&key)?;
        template.built_in = Some(started.elapsed());
        template.replaced = unusable;
        Ok(template)
    }

    /// Removes a template that failed to restore, unless it was replaced since
    /// it was opened: the next sandbox of its shape makes it again.
    pub fn discard(&self, template: &Template) {
        let state = template.dir.join("state");
        let same = match (std::fs::metadata(&state), template.state.metadata()) {
            (Ok(now), Ok(opened)) => Stamp::of(&now) == Stamp::of(&opened),
            _ => false,
        };
        if same {
            let _ = std::fs::remove_dir_all(&template.dir);
        }
    }

    fn template_dir(&self, key: &str) -> PathBuf {
        self.policy.dir.join(key)
    }

    fn failed_marker(&self, key: &str) -> PathBuf {
        self.policy.dir.join(format!("{key}.failed"))
    }

    fn failed_recently(&self, key: &str) -> Option<String> {
        let marker = self.failed_marker(key);
        let age = std::fs::metadata(&marker)
            .ok()?
            .modified()
            .ok()?
            .elapsed()
            .ok()?;
        (age < FAILED_BACKOFF).then(|| std::fs::read_to_string(&marker).unwrap_or_default())
    }

    /// The template `key` if it is whole, unchanged and young enough.
    fn load(&self, key: &str) -> Result<Template, String> {
        let dir = self.template_dir(key);
        let text = std::fs::read(dir.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?;
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| format!("meta.json: {e}"))?;
        if meta.format != META_FORMAT || meta.key != key {
            return Err("meta.json is of another template".into());
        }
        if unix_now().saturating_sub(meta.created_unix_s) >= self.policy.max_age_s {
            return Err("the template is older than its maximum age".into());
        }
        let open = |name: &str, stamp: Stamp| -> Result<File, String> {
            let file = File::open(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            let now = file.metadata().map_err(|e| format!("{name}: {e}"))?;
            if Stamp::of(&now) != stamp {
                return Err(format!("{name} changed since the template was saved"));
            }
            Ok(file)
        };
        Ok(Template {
            key: key.to_string(),
            state: open("state", meta.state)?,
            ram: open("ram", meta.ram)?,
            hello: meta.hello,
            accel: meta.accel,
            built_in: None,
            replaced: None,
            dir,
        })
    }

    /// Boots a template VM for `spec` until its agent greets, saves it and
    /// renames it into place. Called with the template's lock held.
    async fn make(&self, key: &str, spec: &VmSpec, deadline: Instant) -> Result<(), String> {
        let work = self.policy.dir.join(format!("{key}.making"));
        let _ = std::fs::remove_dir_all(&work);
        let empty = work.join("empty");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&empty)
            .map_err(|e| format!("cannot create {}: {e}", empty.display()))?;
        let result = self.boot_and_save(&work, &empty, spec, deadline).await;
        let result = result.and_then(|(hello, accel)| {
            let stamp = |name: &str| {
                std::fs::metadata(work.join(name))
                    .map(|m| Stamp::of(&m))
                    .map_err(|e| format!("{name}: {e}"))
            };
            let meta = Meta {
                format: META_FORMAT,
                key: key.to_string(),
                created_unix_s: unix_now(),
                hello,
                accel,
                state: stamp("state")?,
                ram: stamp("ram")?,
            };
            let text = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
            std::fs::write(work.join("meta.json"), text).map_err(|e| format!("meta.json: {e}"))?;
            let dir = self.template_dir(key);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&work, &dir).map_err(|e| format!("cannot move the template: {e}"))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    }

    async fn boot_and_save(
        &self,
        work: &Path,
        empty: &Path,
        spec: &VmSpec,
        deadline: Instant,
    ) -> Result<(Hello, Accel), String> {
        // The template's shares are an empty directory: it never mounts them,
        // and nothing of any sandbox's files must be near a template.
        let shape = spec.with_shares_at(empty);
        let pair = || StdUnixStream::pair().map_err(|e| format!("socket pair: {e}"));
        let (agent_host, agent_guest) = pair()?;
        // The console and network ends are held, never read: the template does
        // nothing on either before it is saved.
        let (_console_host, console_guest) = pair()?;
        let (_net_host, net_guest) = pair()?;
        let (control_host, control_guest) = pair()?;
        let vmm_log = work.join("vmm.log");
        let vmm_log_file =
            File::create(&vmm_log).map_err(|e| format!("cannot create vmm.log: {e}"))?;
        let links = GuestLinks {
            agent: agent_guest.into(),
            console: console_guest.into(),
            net: shape.net.is_some().then(|| OwnedFd::from(net_guest)),
        };
        let start = Start::Template {
            ram: work.join("ram"),
            control: control_guest.into(),
        };
        let mut vm = self
            .backend
            .launch(&shape, links, vmm_log_file, start)
            .map_err(|e| format!("cannot start the template VM: {e}"))?;
        agent_host
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let agent = UnixStream::from_std(agent_host).map_err(|e| e.to_string())?;
        let mut agent: Framed<UnixStream, FrameCodec<GuestMessage, HostMessage>> =
            Framed::new(agent, FrameCodec::new());
        let hello = tokio::select! {
            frame = agent.next() => match frame {
                Some(Ok(Envelope { msg: GuestMessage::Hello(hello), .. })) => hello,
                Some(Ok(other)) => return Err(format!("expected the agent's greeting, got {:?}", other.msg)),
                Some(Err(err)) => return Err(format!("agent channel failed: {err}")),
                None => return Err("agent channel closed".into()),
            },
            status = vm.child.wait() => return Err(exit_report("the template VM exited", status, &vmm_log)),
            _ = tokio::time::sleep_until(deadline.into()) => {
                return Err("the template's agent did not greet in time".into());
            }
        };
        check_version(&hello).map_err(|e| e.to_string())?;
        let state = File::create(work.join("state")).map_err(|e| format!("state: {e}"))?;
        let saved = async {
            let mut control = Controller::connect(control_host.into()).await?;
            control.save(&state).await?;
            control.quit().await
        };
        tokio::select! {
            saved = saved => saved.map_err(|e| format!("{e}{}", vmm_tail(&vmm_log)))?,
            _ = tokio::time::sleep_until(deadline.into()) => return Err("saving the template took too long".into()),
        }
        state.sync_all().map_err(|e| format!("state: {e}"))?;
        match tokio::time::timeout(QUIT_TIMEOUT, vm.child.wait()).await {
            Ok(Ok(_)) => {}
            _ => return Err("the template VM did not exit after saving".into()),
        }
        let _ = std::fs::remove_dir(empty);
        Ok((hello, vm.accel))
    }

    /// Removes other templates past their age (a new kernel or agent leaves
    /// its predecessor's behind) and leftovers of interrupted makings.
    fn remove_expired(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(&self.policy.dir) else {
            return;
        };
        let max_age = Duration::from_secs(self.policy.max_age_s);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Lock files stay: one may be held, and a new file under the same
            // name would let a second maker in. They are empty.
            if name.starts_with(current) || name.ends_with(".lock") {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// Takes `path`'s exclusive lock, waiting for another holder until `deadline`.
async fn lock(path: &Path, deadline: Instant) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
        if Instant::now() >= deadline {
            return Err("another process is still making the template".into());
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    (msb_state::now_ms() / 1000).max(0) as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
