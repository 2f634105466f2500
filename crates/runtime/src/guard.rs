//! The host's check of everything the guest agent sends, before anything on
//! the host acts on it.
//!
//! Guest root can always replace the agent (it can take PID 1's port
//! descriptor and freeze it), so the agent channel itself is the trust
//! boundary: every message is judged against what the host asked for. The
//! guard keeps one record per open request, made from the host's own request
//! (its kind, the output window, the entry cap), and accepts a guest message
//! only if it is a valid next answer to that request:
//!
//! - its id names a request the host opened and the guest has not ended
//!   (input credit for an ended request is accepted up to the input the host
//!   actually sent, since the agent returns credit from a separate task);
//! - its kind answers that request's kind (`Entries` only for `List`, `Started`
//!   once and first for `Exec`, ...);
//! - output (`Stdout`, `Stderr`, `Data`) fits the credit the client granted,
//!   each message charged its length plus [`OUTPUT_MESSAGE_COST`], which bounds
//!   the number of messages as well as the bytes waiting on the host;
//! - input credit never exceeds the input the host sent;
//! - directory entries are single path components, at most the request's
//!   `max_entries` in all, in non-empty batches; modes are permission bits;
//! - failure messages are short.
//!
//! A message that fails is a violation: the relay kills the VM and reports the
//! reason, and the engine rejects every pending and later call with a
//! `GUEST_PROTOCOL` error. Memory the guard itself holds is one record per
//! request the host opened.

use std::collections::HashMap;

use msb_protocol::{
    is_entry_name, output_charge, FileStat, FsReply, FsRequest, GuestMessage, HostMessage,
    StdinMode, OUTPUT_MESSAGE_COST,
};

/// Longest failure message a guest may send (the agent's are a line).
pub const MAX_FAILURE_MESSAGE: usize = 16 << 10;

/// What the host asked for, which decides what the guest may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec {
        stdin: bool,
        started: bool,
    },
    Read,
    List {
        remaining: u64,
    },
    /// `Write`: input, then `Written`.
    Write,
    /// `WriteFromTransfer`: `Written`.
    Written,
    Stat,
    /// `Mkdir`, `Remove`, `Rename`, `Symlink`: `Done`.
    Done,
}

#[derive(Debug)]
struct Open {
    kind: Kind,
    /// Output charge the guest may still send.
    window: u64,
    /// Input bytes sent and not yet credited back by the guest.
    input_outstanding: u64,
}

/// One sandbox's open requests, as the host made them.
#[derive(Debug, Default)]
pub struct Guard {
    open: HashMap<u64, Open>,
    /// Ended requests whose input the guest has not fully credited back yet.
    draining: HashMap<u64, u64>,
}

/// Why a guest message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {id}: {problem}")]
pub struct Violation {
    pub id: u64,
    pub problem: String,
}

impl Guard {
    /// Records a message the client sends to the guest.
    pub fn on_host(&mut self, id: u64, msg: &HostMessage) {
        let open = |kind, window: u32| Open {
            kind,
            window: window as u64,
            input_outstanding: 0,
        };
        match msg {
            HostMessage::Exec(request) => {
                let stdin = request.stdin == StdinMode::Pipe;
                let kind = Kind::Exec {
                    stdin,
                    started: false,
                };
                self.open.insert(id, open(kind, request.output_window));
            }
            HostMessage::Fs(request) => {
                let record = match request {
                    FsRequest::Read { output_window, .. } => open(Kind::Read, *output_window),
                    FsRequest::List { max_entries, .. } => open(
                        Kind::List {
                            remaining: *max_entries as u64,
                        },
                        0,
                    ),
                    FsRequest::Write { .. } => open(Kind::Write, 0),
                    FsRequest::WriteFromTransfer { .. } => open(Kind::Written, 0),
                    FsRequest::Stat { .. } => open(Kind::Stat, 0),
                    FsRequest::Mkdir { .. }
                    | FsRequest::Remove { .. }
                    | FsRequest::Rename { .. }
                    | FsRequest::Symlink { .. } => open(Kind::Done, 0),
                };
                self.open.insert(id, record);
            }
            HostMessage::Credit(bytes) => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.window = open.window.saturating_add(*bytes as u64);
                }
            }
            HostMessage::Input(data) => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.input_outstanding += data.len() as u64;
                } else if let Some(outstanding) = self.draining.get_mut(&id) {
                    *outstanding += data.len() as u64;
                }
            }
            HostMessage::Init(_)
            | HostMessage::InputEnd
            | HostMessage::Signal(_)
            | HostMessage::Kill
            | HostMessage::Resize(_)
            | HostMessage::Detach
            | HostMessage::Shutdown
            | HostMessage::Ping => {}
        }
    }

    /// Judges one guest message (not `Pong`, which the relay handles).
    pub fn on_guest(&mut self, id: u64, msg: &GuestMessage) -> Result<(), Violation> {
        let violation = |problem: String| Violation { id, problem };
        if let GuestMessage::InputCredit(bytes) = msg {
            return self.input_credit(id, *bytes).map_err(violation);
        }
        let Some(open) = self.open.get_mut(&id) else {
            return Err(violation(format!(
                "{} for a request that is not open",
                kind_name(msg)
            )));
        };
        check(open, msg).map_err(violation)?;
        if msg.ends_request() {
            let ended = self.open.remove(&id).expect("looked up above");
            if ended.input_outstanding > 0 {
                self.draining.insert(id, ended.input_outstanding);
            }
        }
        Ok(())
    }

    fn input_credit(&mut self, id: u64, bytes: u32) -> Result<(), String> {
        let outstanding = match self.open.get_mut(&id) {
            Some(open) if matches!(open.kind, Kind::Write | Kind::Exec { stdin: true, .. }) => {
                &mut open.input_outstanding
            }
            Some(_) => return Err("input credit for a request without input".into()),
            None => match self.draining.get_mut(&id) {
                Some(outstanding) => outstanding,
                None => return Err("input credit for a request that is not open".into()),
            },
        };
        let bytes = bytes as u64;
        if bytes == 0 || bytes > *outstanding {
            return Err(format!(
                "input credit of {bytes} bytes with {outstanding} bytes of input outstanding"
            ));
        }
        *outstanding -= bytes;
        if *outstanding == 0 {
            self.draining.remove(&id);
        }
        Ok(())
    }
}

/// Whether `msg` is a valid next answer to `open`, updating its record.
fn check(open: &mut Open, msg: &GuestMessage) -> Result<(), String> {
    let request = request_name(open.kind);
    let unexpected = || Err(format!("{} is not an answer to {request}", kind_name(msg)));
    match (&mut open.kind, msg) {
        (_, GuestMessage::Failed(failure)) => {
            if failure.message.len() > MAX_FAILURE_MESSAGE {
                return Err(format!(
                    "a failure message of {} bytes",
                    failure.message.len()
                ));
            }
            Ok(())
        }
        (Kind::Exec { started, .. }, GuestMessage::Started { .. }) => {
            if *started {
                return Err("a second Started".into());
            }
            *started = true;
            Ok(())
        }
        (Kind::Exec { started, .. }, GuestMessage::Stdout(data) | GuestMessage::Stderr(data)) => {
            if !*started {
                return Err("output before Started".into());
            }
            charge(&mut open.window, data.len())
        }
        (Kind::Exec { started, .. }, GuestMessage::Exited(_)) => {
            if !*started {
                return Err("Exited before Started".into());
            }
            Ok(())
        }
        (Kind::Read, GuestMessage::Data(data)) => charge(&mut open.window, data.len()),
        (Kind::Read, GuestMessage::Fs(FsReply::Done)) => Ok(()),
        (Kind::List { remaining }, GuestMessage::Fs(FsReply::Entries { entries, more })) => {
            if entries.is_empty() && *more {
                return Err("an empty batch of entries with more to come".into());
            }
            if entries.len() as u64 > *remaining {
                return Err("more entries than the request allowed".into());
            }
            *remaining -= entries.len() as u64;
            for entry in entries {
                if !is_entry_name(&entry.name) {
                    return Err(format!("{:?} is not a directory entry name", entry.name));
                }
                check_stat(&entry.stat)?;
            }
            Ok(())
        }
        (Kind::Write | Kind::Written, GuestMessage::Fs(FsReply::Written { .. })) => Ok(()),
        (Kind::Stat, GuestMessage::Fs(FsReply::Stat(stat))) => check_stat(stat),
        (Kind::Done, GuestMessage::Fs(FsReply::Done)) => Ok(()),
        _ => unexpected(),
    }
}

fn charge(window: &mut u64, len: usize) -> Result<(), String> {
    let cost = output_charge(len);
    if cost > *window {
        return Err(format!(
            "{len} bytes of output (charged {cost}, {OUTPUT_MESSAGE_COST} per message) \
             with {window} of credit left"
        ));
    }
    *window -= cost;
    Ok(())
}

fn check_stat(stat: &FileStat) -> Result<(), String> {
    if stat.mode > 0o7777 {
        return Err(format!("{:o} is not a permission mode", stat.mode));
    }
    Ok(())
}

fn kind_name(msg: &GuestMessage) -> &'static str {
    match msg {
        GuestMessage::Hello(_) => "Hello",
        GuestMessage::Ready => "Ready",
        GuestMessage::Started { .. } => "Started",
        GuestMessage::Stdout(_) => "Stdout",
        GuestMessage::Stderr(_) => "Stderr",
        GuestMessage::Data(_) => "Data",
        GuestMessage::InputCredit(_) => "InputCredit",
        GuestMessage::Exited(_) => "Exited",
        GuestMessage::Fs(FsReply::Done) => "Done",
        GuestMessage::Fs(FsReply::Stat(_)) => "Stat",
        GuestMessage::Fs(FsReply::Entries { .. }) => "Entries",
        GuestMessage::Fs(FsReply::Written { .. }) => "Written",
        GuestMessage::Failed(_) => "Failed",
        GuestMessage::Pong => "Pong",
    }
}

fn request_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Exec { .. } => "Exec",
        Kind::Read => "Read",
        Kind::List { .. } => "List",
        Kind::Write => "Write",
        Kind::Written => "WriteFromTransfer",
        Kind::Stat => "Stat",
        Kind::Done => "a filesystem change",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msb_protocol::{DirEntry, ExecRequest, ExitStatus, Failure, FailureKind, FileKind};

    fn exec(window: u32, stdin: StdinMode) -> HostMessage {
        HostMessage::Exec(ExecRequest {
            program: "true".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            user: None,
            stdin,
            tty: None,
            output_window: window,
        })
    }

    fn exited() -> GuestMessage {
        GuestMessage::Exited(ExitStatus {
            code: Some(0),
            signal: None,
            guest_micros: 1,
        })
    }

    fn stat(kind: FileKind, mode: u32) -> FileStat {
        FileStat {
            kind,
            size: 0,
            mode,
            uid: 0,
            gid: 0,
            mtime_nanos: 0,
        }
    }

    fn entries(names: &[&str], more: bool) -> GuestMessage {
        GuestMessage::Fs(FsReply::Entries {
            entries: names
                .iter()
                .map(|name| DirEntry {
                    name: name.to_string(),
                    stat: stat(FileKind::File, 0o644),
                })
                .collect(),
            more,
        })
    }

    fn list(guard: &mut Guard, id: u64, max_entries: u32) {
        guard.on_host(
            id,
            &HostMessage::Fs(FsRequest::List {
                path: "/".into(),
                max_entries,
            }),
        );
    }

    const STARTED: GuestMessage = GuestMessage::Started { pid: 7 };

    #[test]
    fn output_is_charged_per_message_against_the_granted_credit() {
        let mut guard = Guard::default();
        let window = 2 * (OUTPUT_MESSAGE_COST + 10);
        guard.on_host(5, &exec(window, StdinMode::Null));
        guard.on_guest(5, &STARTED).unwrap();
        guard
            .on_guest(5, &GuestMessage::Stdout(vec![0; 10]))
            .unwrap();
        guard
            .on_guest(5, &GuestMessage::Stderr(vec![0; 10]))
            .unwrap();
        // Even an empty message costs its overhead: a flood of them is bounded too.
        assert!(guard.on_guest(5, &GuestMessage::Stdout(vec![])).is_err());
        guard.on_host(5, &HostMessage::Credit(OUTPUT_MESSAGE_COST + 3));
        guard
            .on_guest(5, &GuestMessage::Stdout(vec![0; 3]))
            .unwrap();
        assert!(guard
            .on_guest(5, &GuestMessage::Stdout(vec![0; 1]))
            .is_err());
    }

    #[test]
    fn messages_for_unknown_or_ended_requests_are_violations() {
        let mut guard = Guard::default();
        guard.on_host(1, &exec(1 << 20, StdinMode::Null));
        guard.on_guest(1, &STARTED).unwrap();
        guard.on_guest(1, &exited()).unwrap();
        assert!(guard.on_guest(1, &GuestMessage::Stdout(vec![1])).is_err());
        assert!(guard.on_guest(1, &exited()).is_err());
        assert!(guard.on_guest(999_999, &exited()).is_err());
        assert!(guard.on_guest(3, &GuestMessage::Fs(FsReply::Done)).is_err());
    }

    #[test]
    fn answers_must_match_the_request_kind() {
        let mut guard = Guard::default();
        guard.on_host(
            2,
            &HostMessage::Fs(FsRequest::Stat {
                path: "/".into(),
                follow_symlinks: true,
            }),
        );
        assert!(guard.on_guest(2, &entries(&["a"], false)).is_err());
        guard.on_host(3, &exec(100, StdinMode::Null));
        assert!(
            guard.on_guest(3, &exited()).is_err(),
            "Exited before Started"
        );
        guard.on_guest(3, &STARTED).unwrap();
        assert!(guard.on_guest(3, &STARTED).is_err(), "a second Started");
        assert!(guard.on_guest(4, &GuestMessage::Ready).is_err());
        assert!(guard
            .on_guest(
                4,
                &GuestMessage::Hello(msb_protocol::Hello {
                    version: 2,
                    agent_version: "x".into()
                })
            )
            .is_err());
    }

    #[test]
    fn entry_names_must_be_single_components() {
        for bad in ["../../escape", "/tmp/abs", "a/b", ".", "..", "", "nul\0"] {
            let mut guard = Guard::default();
            list(&mut guard, 1, 100);
            assert!(
                guard.on_guest(1, &entries(&["ok", bad], false)).is_err(),
                "{bad:?}"
            );
        }
        let mut guard = Guard::default();
        list(&mut guard, 1, 100);
        guard
            .on_guest(1, &entries(&["ok", ".hidden", "a b"], false))
            .unwrap();
    }

    #[test]
    fn entries_are_capped_by_the_request_and_batches_are_not_empty() {
        let mut guard = Guard::default();
        list(&mut guard, 1, 3);
        guard.on_guest(1, &entries(&["a", "b"], true)).unwrap();
        assert!(guard.on_guest(1, &entries(&["c", "d"], true)).is_err());

        let mut guard = Guard::default();
        list(&mut guard, 1, 3);
        assert!(guard.on_guest(1, &entries(&[], true)).is_err());
        guard.on_guest(1, &entries(&[], false)).unwrap();
    }

    #[test]
    fn modes_beyond_permission_bits_are_violations() {
        let mut guard = Guard::default();
        list(&mut guard, 1, 3);
        let reply = GuestMessage::Fs(FsReply::Entries {
            entries: vec![DirEntry {
                name: "x".into(),
                stat: stat(FileKind::Dir, 0o170777),
            }],
            more: false,
        });
        assert!(guard.on_guest(1, &reply).is_err());
    }

    #[test]
    fn input_credit_is_bounded_by_the_input_sent_even_after_the_end() {
        let mut guard = Guard::default();
        guard.on_host(1, &exec(100, StdinMode::Pipe));
        guard.on_guest(1, &STARTED).unwrap();
        assert!(guard.on_guest(1, &GuestMessage::InputCredit(1)).is_err());
        guard.on_host(1, &HostMessage::Input(vec![0; 10]));
        guard.on_guest(1, &GuestMessage::InputCredit(4)).unwrap();
        guard.on_guest(1, &exited()).unwrap();
        // The agent returns credit for input in flight from a separate task.
        guard.on_guest(1, &GuestMessage::InputCredit(6)).unwrap();
        assert!(guard.on_guest(1, &GuestMessage::InputCredit(1)).is_err());

        guard.on_host(2, &exec(100, StdinMode::Null));
        guard.on_host(2, &HostMessage::Input(vec![0; 10]));
        assert!(
            guard.on_guest(2, &GuestMessage::InputCredit(1)).is_err(),
            "no stdin pipe"
        );
    }

    #[test]
    fn long_failure_messages_are_violations() {
        let mut guard = Guard::default();
        guard.on_host(1, &exec(100, StdinMode::Null));
        let failed = |len| GuestMessage::Failed(Failure::new(FailureKind::Io, "x".repeat(len)));
        assert!(guard.on_guest(1, &failed(MAX_FAILURE_MESSAGE + 1)).is_err());
        guard.on_guest(1, &failed(100)).unwrap();
    }
}
