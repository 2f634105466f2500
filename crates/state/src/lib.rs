//! The state database: one SQLite file under the state home, shared by every
//! process that uses that home (WAL mode, a busy timeout: concurrent writers
//! wait for each other instead of failing).
//!
//! It records which images are known by which references, their layers, and
//! which sandboxes use which image. Files in the caches are the source of
//! truth for content; the database says what they belong to.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

/// How long a write waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("state database {path}")]
pub struct StateError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

pub type Result<T> = std::result::Result<T, StateError>;

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    /// "dir" (a host directory shared over 9p) or "disk" (an ext4 image of `quota_mib`).
    pub kind: String,
    pub quota_mib: Option<u32>,
    pub created_at_ms: i64,
}

/// A sandbox's mount of a volume, as recorded when it started. It counts only
/// while that sandbox's runtime lives (the caller checks its lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub sandbox: String,
    pub volume: String,
    pub readonly: bool,
}

/// An image known by a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The reference as normalized by the puller (registry/repository:tag or @digest).
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The OCI image configuration, as JSON.
    pub config_json: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// Compressed size of the layers, in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub pulled_at: i64,
}

/// A sandbox and the image it was created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub name: String,
    pub manifest_digest: Option<String>,
    pub dir: String,
}

/// Where a sandbox's run stands, as its runtime last recorded it. A runtime that
/// dies without recording its end leaves `Starting`, `Running` or `Stopping`
/// behind: readers compare the recorded runtime process with the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Starting,
    /// Booted into a warm pool: running, but nobody's until claimed, and not
    /// listed or reachable by name before that.
    Pooled,
    Running,
    Stopping,
    Stopped,
    Crashed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Starting => "starting",
            RunStatus::Pooled => "pooled",
            RunStatus::Running => "running",
            RunStatus::Stopping => "stopping",
            RunStatus::Stopped => "stopped",
            RunStatus::Crashed => "crashed",
        }
    }

    fn parse(text: &str) -> RunStatus {
        match text {
            "starting" => RunStatus::Starting,
            "pooled" => RunStatus::Pooled,
            "running" => RunStatus::Running,
            "stopping" => RunStatus::Stopping,
            "stopped" => RunStatus::Stopped,
            // Unknown text was not written by this code: treat it as the worst case.
            _ => RunStatus::Crashed,
        }
    }

    /// Whether a runtime should be alive for this status.
    pub fn expects_runtime(self) -> bool {
        matches!(
            self,
            RunStatus::Starting | RunStatus::Pooled | RunStatus::Running | RunStatus::Stopping
        )
    }
}

/// One run of a sandbox: what it was created with and where its life stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRun {
    pub name: String,
    pub status: RunStatus,
    /// Why it stopped or crashed.
    pub reason: Option<String>,
    /// The image as the caller named it.
    pub image: String,
    pub detached: bool,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    /// The runtime process and its start time (clock ticks after boot, from
    /// `/proc/PID/stat`), so that a reused pid is not mistaken for it.
    pub runtime_pid: Option<u32>,
    pub runtime_start: Option<u64>,
    /// What a new handle needs (the engine's own format).
    pub handle_json: String,
}

impl SandboxRun {
    /// Whether the runtime this run recorded is still alive: the same pid with
    /// the same start time, not a zombie. A run whose status expects a runtime
    /// but has none crashed.
    pub fn runtime_alive(&self) -> bool {
        match (self.runtime_pid, self.runtime_start) {
            (Some(pid), Some(start)) => process_start(pid) == Some(start),
            _ => false,
        }
    }

    /// The status with a dead runtime taken into account.
    pub fn effective_status(&self) -> RunStatus {
        match self.status {
            // Before boot the engine, not a runtime, holds the record.
            RunStatus::Starting => RunStatus::Starting,
            RunStatus::Pooled if self.runtime_pid.is_none() => RunStatus::Pooled,
            status if status.expects_runtime() && !self.runtime_alive() => RunStatus::Crashed,
            status => status,
        }
    }
}

/// A live process's start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`); `None` for a process that is gone or a zombie.
pub fn process_start(pid: u32) -> Option<u64> {
    let fields = process_stat(pid)?;
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

/// The fields of `/proc/PID/stat` from field 3 (the state) on: field N is at
/// index N - 3. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from after its last ')'.
pub fn process_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.get(stat.rfind(')')? + 2..)?
            .split(' ')
            .map(str::to_string)
            .collect(),
    )
}

/// Milliseconds since the Unix epoch, as the run records store times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct State {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    reference TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    config_json TEXT NOT NULL,
    size INTEGER NOT NULL,
    pulled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layers (
    manifest_digest TEXT NOT NULL,
    position INTEGER NOT NULL,
    layer_digest TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, position)
);
CREATE TABLE IF NOT EXISTS sandboxes (
    name TEXT PRIMARY KEY,
    manifest_digest TEXT,
    dir TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sandbox_runs (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT,
    image TEXT NOT NULL,
    detached INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    stopped_at_ms INTEGER,
    runtime_pid INTEGER,
    runtime_start INTEGER,
    handle_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    quota_mib INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_mounts (
    sandbox TEXT NOT NULL,
    volume TEXT NOT NULL,
    readonly INTEGER NOT NULL,
    PRIMARY KEY (sandbox, volume)
);
";

/// Switches the database to WAL once. Changing the journal mode needs an
/// exclusive lock and SQLite answers "busy" at once instead of waiting, so a
/// second process opening the database at the same moment retries briefly.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut attempt = 0;
    loop {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 50 && is_busy(&err) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::DatabaseBusy || e.code == rusqlite::ErrorCode::DatabaseLocked
    )
}

impl State {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<State> {
        let display = path.display().to_string();
        let wrap = |source| StateError {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
        enable_wal(&conn).map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(wrap)?;
        Ok(State {
            conn,
            path: display,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError {
            path: self.path.clone(),
            source,
        }
    }

    /// Records (or re-points) `image.reference`.
    pub fn put_image(&mut self, image: &ImageRecord) -> Result<()> {
        // IMMEDIATE: take the write lock up front, so two writers wait for each
        // other (busy timeout) instead of failing on a read-to-write upgrade.
        let tx = begin_immediate(&mut self.conn, &self.path)?;
        let result = (|| {
            tx.execute(
                "INSERT INTO images (reference, manifest_digest, config_digest, config_json, size, pulled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(reference) DO UPDATE SET manifest_digest = ?2, config_digest = ?3,
                   config_json = ?4, size = ?5, pulled_at = ?6",
                params![
                    image.reference,
                    image.manifest_digest,
                    image.config_digest,
                    image.config_json,
                    image.size as i64,
                    image.pulled_at
                ],
            )?;
            tx.execute(
                "DELETE FROM image_layers WHERE manifest_digest = ?1",
                params![image.manifest_digest],
            )?;
            for (position, layer) in image.layers.iter().enumerate() {
                tx.execute(
                    "INSERT INTO image_layers (manifest_digest, position, layer_digest) VALUES (?1, ?2, ?3)",
                    params![image.manifest_digest, position as i64, layer],
                )?;
            }
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }

    pub fn image(&self, reference: &str) -> Result<Option<ImageRecord>> {
        let row = self
            .conn
            .query_row(
                "SELECT reference, manifest_digest, config_digest, config_json, size, pulled_at
                 FROM images WHERE reference = ?1",
                params![reference],
                |row| {
                    Ok(ImageRecord {
                        reference: row.get(0)?,
                        manifest_digest: row.get(1)?,
                        config_digest: row.get(2)?,
                        config_json: row.get(3)?,
                        layers: vec![],
                        size: row.get::<_, i64>(4)? as u64,
                        pulled_at: row.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|mut image| {
            image.layers = self.layers_of(&image.manifest_digest)?;
            Ok(image)
        })
        .transpose()
    }

    /// Every reference, sorted.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let references = self.strings("SELECT reference FROM images ORDER BY reference", [])?;
        let mut images = Vec::new();
        for reference in references {
            if let Some(image) = self.image(&reference)? {
                images.push(image);
            }
        }
        Ok(images)
    }

    fn layers_of(&self, manifest_digest: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT layer_digest FROM image_layers WHERE manifest_digest = ?1 ORDER BY position",
            params![manifest_digest],
        )
    }

    /// The first column of every row `sql` selects, as text.
    fn strings(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |row| row.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Forgets a reference. Returns whether it existed.
    pub fn remove_image(&mut self, reference: &str) -> Result<bool> {
        let removed = self
            .conn
            .execute(
                "DELETE FROM images WHERE reference = ?1",
                params![reference],
            )
            .map_err(|e| self.err(e))?;
        Ok(removed > 0)
    }

    /// Manifests no reference points to any more; their layer lists are dropped.
    pub fn take_unreferenced_manifests(&mut self) -> Result<Vec<String>> {
        let manifests = self.strings(
            "SELECT DISTINCT manifest_digest FROM image_layers
             WHERE manifest_digest NOT IN (SELECT manifest_digest FROM images)",
            [],
        )?;
        for manifest in &manifests {
            self.conn
                .execute(
                    "DELETE FROM image_layers WHERE manifest_digest = ?1",
                    params![manifest],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(manifests)
    }

    /// Every layer digest some known image uses.
    pub fn referenced_layers(&self) -> Result<Vec<String>> {
        self.strings("SELECT DISTINCT layer_digest FROM image_layers", [])
    }

    pub fn put_sandbox(&mut self, sandbox: &SandboxRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO sandboxes (name, manifest_digest, dir) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET manifest_digest = ?2, dir = ?3",
                params![sandbox.name, sandbox.manifest_digest, sandbox.dir],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sandboxes WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a new run of `run.name`, replacing an earlier one.
    pub fn put_run(&mut self, run: &SandboxRun) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO sandbox_runs (name, status, reason, image, detached, cpus,
                   memory_mib, created_at_ms, stopped_at_ms, runtime_pid, runtime_start, handle_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    run.name,
                    run.status.as_str(),
                    run.reason,
                    run.image,
                    run.detached,
                    run.cpus,
                    run.memory_mib,
                    run.created_at_ms,
                    run.stopped_at_ms,
                    run.runtime_pid,
                    run.runtime_start.map(|t| t as i64),
                    run.handle_json
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks the run booted by the runtime process `pid` (started at `start`):
    /// `Running`, or `Pooled` for a sandbox booted into a warm pool.
    pub fn set_booted(
        &mut self,
        name: &str,
        status: RunStatus,
        pid: u32,
        start: u64,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sandbox_runs SET status = ?2, runtime_pid = ?3, runtime_start = ?4
                 WHERE name = ?1",
                params![name, status.as_str(), pid, start as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Turns a pooled run into a running one; false if it is not pooled (any
    /// more): it ended, or was claimed already.
    pub fn claim_pooled(&mut self, name: &str) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE sandbox_runs SET status = 'running' WHERE name = ?1 AND status = 'pooled'",
                params![name],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    /// Records a new status; an end (`Stopped`, `Crashed`) also records its time.
    pub fn set_status(
        &mut self,
        name: &str,
        status: RunStatus,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let stopped_at = (!status.expects_runtime()).then_some(now_ms);
        self.conn
            .execute(
                "UPDATE sandbox_runs SET status = ?2, reason = COALESCE(?3, reason),
                   stopped_at_ms = COALESCE(?4, stopped_at_ms) WHERE name = ?1",
                params![name, status.as_str(), reason, stopped_at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn run(&self, name: &str) -> Result<Option<SandboxRun>> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM sandbox_runs WHERE name = ?1"),
                params![name],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every recorded run, by name.
    pub fn runs(&self) -> Result<Vec<SandboxRun>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM sandbox_runs ORDER BY name"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], run_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    pub fn remove_run(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sandbox_runs WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a new volume; false when the name is taken.
    pub fn insert_volume(&mut self, volume: &VolumeRecord) -> Result<bool> {
        let inserted = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO volumes (name, kind, quota_mib, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    volume.name,
                    volume.kind,
                    volume.quota_mib,
                    volume.created_at_ms
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>> {
        volume_named(&self.conn, name).map_err(|e| self.err(e))
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, kind, quota_mib, created_at_ms FROM volumes ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], volume_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Mounts of `volume` recorded by any sandbox (live or not).
    pub fn mounts_of(&self, volume: &str) -> Result<Vec<VolumeMount>> {
        mounts_where(&self.conn, "volume = ?1", params![volume]).map_err(|e| self.err(e))
    }

    /// In one transaction (no other process's claim or volume removal in
    /// between): checks with `admit` that every volume `mounts` names exists and that accepts the volume's other mounts, then replaces `sandbox`'s
    /// recorded mounts with `mounts`. `admit` gets the volume (`None`: there
    /// is no such volume), the mount asked for and the other sandboxes'
    /// recorded mounts of it; an `Err` from it aborts the claim and is
    /// returned as is.
    pub fn claim_volumes<E>(
        &mut self,
        sandbox: &str,
        mounts: &[VolumeMount],
        mut admit: impl FnMut(
            Option<&VolumeRecord>,
            &VolumeMount,
            &[VolumeMount],
        ) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<(), E>> {
        let tx = begin_immediate(&mut self.conn, &self.path)?;
        let wrap = |source| StateError {
            path: self.path.clone(),
            source,
        };
        for mount in mounts {
            let volume = volume_named(&tx, &mount.volume).map_err(wrap)?;
            let others = mounts_where(
                &tx,
                "volume = ?1 AND sandbox != ?2",
                params![mount.volume, sandbox],
            )
            .map_err(wrap)?;
            if let Err(refused) = admit(volume.as_ref(), mount, &others) {
                return Ok(Err(refused));
            }
        }
        tx.execute(
            "DELETE FROM volume_mounts WHERE sandbox = ?1",
            params![sandbox],
        )
        .map_err(wrap)?;
        for mount in mounts {
            tx.execute(
                "INSERT INTO volume_mounts (sandbox, volume, readonly) VALUES (?1, ?2, ?3)",
                params![sandbox, mount.volume, mount.readonly],
            )
            .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(Ok(()))
    }

    /// In one transaction: asks `check` whether the volume may go (given its
    /// recorded mounts) and deletes its record and mounts if so. `Ok(None)`:
    /// there is no such volume.
    pub fn remove_volume<E>(
        &mut self,
        name: &str,
        check: impl FnOnce(&[VolumeMount]) -> std::result::Result<(), E>,
    ) -> Result<Option<std::result::Result<VolumeRecord, E>>> {
        let path = self.path.clone();
        let wrap = |source| StateError {
            path: path.clone(),
            source,
        };
        let tx = begin_immediate(&mut self.conn, &self.path)?;
        let Some(volume) = volume_named(&tx, name).map_err(wrap)? else {
            return Ok(None);
        };
        let mounts = mounts_where(&tx, "volume = ?1", params![name]).map_err(wrap)?;
        if let Err(refused) = check(&mounts) {
            return Ok(Some(Err(refused)));
        }
        tx.execute("DELETE FROM volume_mounts WHERE volume = ?1", params![name])
            .map_err(wrap)?;
        tx.execute("DELETE FROM volumes WHERE name = ?1", params![name])
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(Some(Ok(volume)))
    }

    /// Forgets a volume record (a create whose files could not be made).
    pub fn forget_volume(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM volumes WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sandboxes recorded as created from `manifest_digest` (running or not:
    /// the caller checks their locks).
    pub fn sandboxes_using(&self, manifest_digest: &str) -> Result<Vec<SandboxRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, manifest_digest, dir FROM sandboxes WHERE manifest_digest = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![manifest_digest], |row| {
                Ok(SandboxRecord {
                    name: row.get(0)?,
                    manifest_digest: row.get(1)?,
                    dir: row.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }
}

const RUN_COLUMNS: &str = "name, status, reason, image, detached, cpus, memory_mib, created_at_ms,
    stopped_at_ms, runtime_pid, runtime_start, handle_json";

/// A transaction that takes the write lock up front, so that two writers wait
/// for each other (busy timeout) instead of failing on a read-to-write upgrade.
fn begin_immediate<'c>(conn: &'c mut Connection, path: &str) -> Result<rusqlite::Transaction<'c>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|source| StateError {
            path: path.to_string(),
            source,
        })
}

/// The volume mounts rows matching `condition` (an SQL expression over `sandbox`, `volume`).
fn mounts_where(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<VolumeMount>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT sandbox, volume, readonly FROM volume_mounts WHERE {condition}"
    ))?;
    let rows = stmt.query_map(params, |row| {
        Ok(VolumeMount {
            sandbox: row.get(0)?,
            volume: row.get(1)?,
            readonly: row.get(2)?,
        })
    })?;
    rows.collect()
}

fn volume_named(conn: &Connection, name: &str) -> rusqlite::Result<Option<VolumeRecord>> {
    conn.query_row(
        "SELECT name, kind, quota_mib, created_at_ms FROM volumes WHERE name = ?1",
        params![name],
        volume_from_row,
    )
    .optional()
}

fn volume_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeRecord> {
    Ok(VolumeRecord {
        name: row.get(0)?,
        kind: row.get(1)?,
        quota_mib: row.get(2)?,
        created_at_ms: row.get(3)?,
    })
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxRun> {
    Ok(SandboxRun {
        name: row.get(0)?,
        status: RunStatus::parse(&row.get::<_, String>(1)?),
        reason: row.get(2)?,
        image: row.get(3)?,
        detached: row.get(4)?,
        cpus: row.get(5)?,
        memory_mib: row.get(6)?,
        created_at_ms: row.get(7)?,
        stopped_at_ms: row.get(8)?,
        runtime_pid: row.get(9)?,
        runtime_start: row.get::<_, Option<i64>>(10)?.map(|t| t as u64),
        handle_json: row.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str, manifest: &str, layers: &[&str]) -> ImageRecord {
        ImageRecord {
            reference: reference.into(),
            manifest_digest: manifest.into(),
            config_digest: format!("{manifest}-config"),
            config_json: "{}".into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            size: 10,
            pulled_at: 1,
        }
    }

    #[test]
    fn images_round_trip_and_references_share_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        state
            .put_image(&image("r/a:1", "m1", &["l1", "l2"]))
            .unwrap();
        state
            .put_image(&image("r/a:latest", "m1", &["l1", "l2"]))
            .unwrap();
        state
            .put_image(&image("r/b:1", "m2", &["l1", "l3"]))
            .unwrap();
        assert_eq!(
            state.image("r/a:1").unwrap().unwrap().layers,
            vec!["l1", "l2"]
        );
        assert_eq!(state.images().unwrap().len(), 3);

        assert!(state.remove_image("r/a:1").unwrap());
        assert!(state.take_unreferenced_manifests().unwrap().is_empty());
        assert!(state.remove_image("r/a:latest").unwrap());
        assert_eq!(state.take_unreferenced_manifests().unwrap(), vec!["m1"]);
        let mut layers = state.referenced_layers().unwrap();
        layers.sort();
        assert_eq!(layers, vec!["l1", "l3"]);
        assert!(!state.remove_image("r/a:1").unwrap());
    }

    #[test]
    fn many_processes_worth_of_connections_open_and_write_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut state = State::open(&path).unwrap();
                    state
                        .put_image(&image(&format!("r/{i}:1"), &format!("m{i}"), &["l"]))
                        .unwrap();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(State::open(&path).unwrap().images().unwrap().len(), 8);
    }

    #[test]
    fn a_run_moves_through_its_statuses_and_keeps_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let run = SandboxRun {
            name: "w".into(),
            status: RunStatus::Starting,
            reason: None,
            image: "busybox".into(),
            detached: true,
            cpus: 1,
            memory_mib: 512,
            created_at_ms: 1000,
            stopped_at_ms: None,
            runtime_pid: None,
            runtime_start: None,
            handle_json: "{}".into(),
        };
        state.put_run(&run).unwrap();
        state.set_booted("w", RunStatus::Running, 42, 7).unwrap();
        let running = state.run("w").unwrap().unwrap();
        assert_eq!(running.status, RunStatus::Running);
        assert_eq!(
            (running.runtime_pid, running.runtime_start),
            (Some(42), Some(7))
        );
        state
            .set_status("w", RunStatus::Stopping, None, 2000)
            .unwrap();
        assert_eq!(state.run("w").unwrap().unwrap().stopped_at_ms, None);
        state
            .set_status("w", RunStatus::Stopped, Some("it was stopped"), 3000)
            .unwrap();
        let stopped = state.run("w").unwrap().unwrap();
        assert_eq!(stopped.status, RunStatus::Stopped);
        assert_eq!(stopped.reason.as_deref(), Some("it was stopped"));
        assert_eq!(stopped.stopped_at_ms, Some(3000));
        assert_eq!(state.runs().unwrap().len(), 1);
        state.remove_run("w").unwrap();
        assert_eq!(state.run("w").unwrap(), None);
    }

    #[test]
    fn a_pooled_run_is_claimed_once_and_only_while_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let run = |name: &str| SandboxRun {
            name: name.into(),
            status: RunStatus::Starting,
            reason: None,
            image: "busybox".into(),
            detached: false,
            cpus: 1,
            memory_mib: 512,
            created_at_ms: 1000,
            stopped_at_ms: None,
            runtime_pid: None,
            runtime_start: None,
            handle_json: "{}".into(),
        };
        state.put_run(&run("p")).unwrap();
        state.put_run(&run("r")).unwrap();
        assert!(
            !state.claim_pooled("p").unwrap(),
            "a starting run is not pooled yet"
        );
        state.set_booted("p", RunStatus::Pooled, 42, 7).unwrap();
        state.set_booted("r", RunStatus::Running, 43, 7).unwrap();
        assert_eq!(state.run("p").unwrap().unwrap().status, RunStatus::Pooled);
        assert!(
            !state.claim_pooled("r").unwrap(),
            "a running run is nobody's to claim"
        );
        assert!(state.claim_pooled("p").unwrap());
        assert_eq!(state.run("p").unwrap().unwrap().status, RunStatus::Running);
        assert!(!state.claim_pooled("p").unwrap(), "claimed twice");
        assert!(!state.claim_pooled("gone").unwrap());
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_mistaken_for_it() {
        let pid = std::process::id();
        let start = process_start(pid).expect("this process has a start time");
        let mut run = SandboxRun {
            name: "x".into(),
            status: RunStatus::Running,
            reason: None,
            image: "i".into(),
            detached: false,
            cpus: 1,
            memory_mib: 1,
            created_at_ms: 0,
            stopped_at_ms: None,
            runtime_pid: Some(pid),
            runtime_start: Some(start),
            handle_json: "{}".into(),
        };
        assert_eq!(run.effective_status(), RunStatus::Running);
        run.runtime_start = Some(start + 1);
        assert_eq!(run.effective_status(), RunStatus::Crashed);
        run.status = RunStatus::Stopped;
        assert_eq!(run.effective_status(), RunStatus::Stopped);
    }

    #[test]
    fn a_second_connection_sees_the_first_ones_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut first = State::open(&path).unwrap();
        let second = State::open(&path).unwrap();
        first
            .put_sandbox(&SandboxRecord {
                name: "s".into(),
                manifest_digest: Some("m".into()),
                dir: "/x".into(),
            })
            .unwrap();
        assert_eq!(second.sandboxes_using("m").unwrap().len(), 1);
        first.remove_sandbox("s").unwrap();
        assert!(second.sandboxes_using("m").unwrap().is_empty());
    }

    #[test]
    fn volume_claims_and_removals_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("state.db")).unwrap();
        let volume = VolumeRecord {
            name: "data".into(),
            kind: "disk".into(),
            quota_mib: Some(16),
            created_at_ms: 1,
        };
        assert!(state.insert_volume(&volume).unwrap());
        assert!(!state.insert_volume(&volume).unwrap(), "a taken name");
        let mount = |sandbox: &str| VolumeMount {
            sandbox: sandbox.into(),
            volume: "data".into(),
            readonly: false,
        };
        // A missing volume reaches `admit` as None, and a refusal records nothing.
        let missing = VolumeMount {
            volume: "nope".into(),
            ..mount("a")
        };
        let refused = state
            .claim_volumes("a", &[missing], |v, _, _| match v {
                None => Err("missing"),
                Some(_) => Ok(()),
            })
            .unwrap();
        assert_eq!(refused, Err("missing"));
        assert!(state.mounts_of("nope").unwrap().is_empty());
        // Each claim sees the others' mounts, never its own.
        state
            .claim_volumes("a", &[mount("a")], |_, _, others| {
                assert!(others.is_empty());
                Ok::<(), ()>(())
            })
            .unwrap()
            .unwrap();
        let seen = state
            .claim_volumes("b", &[mount("b")], |_, _, others| {
                Err(others.iter().map(|o| o.sandbox.clone()).collect::<Vec<_>>())
            })
            .unwrap();
        assert_eq!(seen, Err(vec!["a".to_string()]));
        // A removal is asked about the mounts and leaves nothing when allowed.
        let kept = state.remove_volume("data", |m| Err(m.len())).unwrap();
        assert_eq!(kept, Some(Err(1)));
        let removed = state.remove_volume("data", |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(removed, Some(Ok(volume)));
        assert!(state.mounts_of("data").unwrap().is_empty());
        assert_eq!(
            state.remove_volume("data", |_| Ok::<(), ()>(())).unwrap(),
            None
        );
    }
}
