//! What the impostor tells the host: one [`Session`] per takeover turns each
//! host message into [`Action`]s. Pure (no I/O), so every lie is unit-tested.
//!
//! Every scenario answers like the real agent where it does not lie: `Ping`
//! gets `Pong` (except `silent`), execs "run" and exit 0, file operations
//! succeed. That keeps each test about one violation.

use std::collections::HashMap;

use msb_protocol::{
    DirEntry, Envelope, ExitStatus, FileKind, FileStat, FsReply, FsRequest, GuestMessage,
    HostMessage, MAX_DATA_CHUNK, MAX_FRAME_LEN,
};

/// The lie a run tells, chosen by the first command-line argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Directory listings hold names that are not one path component.
    Traversal,
    /// Honest names; every directory is 0o7777 and every file 0o6777.
    Modes,
    /// A listing never ends: `Entries` batches with `more: true`, forever.
    FloodEntries,
    /// An exec's stdout far beyond its output window, without waiting for credit.
    FloodOutput,
    /// Replies for request ids the host never used, at once.
    Unsolicited,
    /// A well-framed payload that does not decode, then random bytes.
    Garbage,
    /// Execs are never answered (no `Started`, no `Exited`).
    NoStarted,
    /// Nothing is ever answered, not even `Ping`.
    Silent,
    /// A length prefix above the protocol's `MAX_FRAME_LEN`.
    HugeFrame,
    /// `/proc/meminfo` claims far more memory than the VM was given, and more
    /// available than total; everything else is honest.
    Meminfo,
}

impl Scenario {
    pub const ALL: [(&'static str, Scenario); 10] = [
        ("traversal", Scenario::Traversal),
        ("modes", Scenario::Modes),
        ("flood-entries", Scenario::FloodEntries),
        ("flood-output", Scenario::FloodOutput),
        ("unsolicited", Scenario::Unsolicited),
        ("garbage", Scenario::Garbage),
        ("no-started", Scenario::NoStarted),
        ("silent", Scenario::Silent),
        ("huge-frame", Scenario::HugeFrame),
        ("meminfo", Scenario::Meminfo),
    ];

    pub fn parse(name: &str) -> Option<Scenario> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, scenario)| *scenario)
    }
}

/// One step for the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A well-formed frame.
    Send(Envelope<GuestMessage>),
    /// Bytes written as they are, frame or not.
    Raw(Vec<u8>),
    /// Messages for this id without end, as fast as the port takes them.
    Flood(u64, Flood),
    /// The host asked for shutdown: power the VM off as the agent would.
    PowerOff,
}

/// An endless stream of messages for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Entries,
    Stdout,
}

/// Entries per batch of [`Flood::Entries`] (the real agent sends 256 too).
pub const FLOOD_BATCH: usize = 256;

impl Flood {
    /// The `seq`th message of the flood.
    pub fn message(self, seq: u64) -> GuestMessage {
        match self {
            Flood::Entries => GuestMessage::Fs(FsReply::Entries {
                entries: (0..FLOOD_BATCH)
                    .map(|i| DirEntry {
                        name: format!("flood-{seq}-{i}"),
                        stat: file_stat(0o644, 0),
                    })
                    .collect(),
                more: true,
            }),
            Flood::Stdout => GuestMessage::Stdout(vec![b'x'; MAX_DATA_CHUNK]),
        }
    }
}

/// Pid the impostor claims for every exec it "starts".
const FAKE_PID: u32 = 4242;

/// Id of the unsolicited replies: far above any id a test's host will have used.
pub const UNSOLICITED_ID: u64 = 999_999;

/// Content of every file in the `modes` scenario.
pub const MODES_CONTENT: &[u8] = b"modes scenario\n";

/// Content of every file in the `traversal` scenario.
pub const TRAVERSAL_CONTENT: &[u8] = b"pwned";

/// What `meminfo` says of the guest's memory: 64 GiB, and twice that available.
pub const MEMINFO_LIE: &[u8] =
    b"MemTotal:       67108864 kB\nMemFree:        67108864 kB\nMemAvailable:  134217728 kB\n";

pub struct Session {
    scenario: Scenario,
    /// `-<tag>`, appended to the escaping names of `traversal` so that a test
    /// run can tell its own files from a stale one; empty without a tag.
    suffix: String,
    /// Bytes received so far per file write, answered at `InputEnd`.
    writes: HashMap<u64, u64>,
    /// Whether the one-shot lie (`garbage`, `huge-frame`) was told.
    lied: bool,
}

impl Session {
    pub fn new(scenario: Scenario, tag: &str) -> Session {
        Session {
            scenario,
            suffix: if tag.is_empty() {
                String::new()
            } else {
                format!("-{tag}")
            },
            writes: HashMap::new(),
            lied: false,
        }
    }

    /// What is sent before the host asks anything.
    pub fn opening(&mut self) -> Vec<Action> {
        match self.scenario {
            // An ending message first: a host that only checks output ids would
            // let it through, so this is what a complete check must catch.
            Scenario::Unsolicited => vec![
                send(
                    UNSOLICITED_ID,
                    GuestMessage::Exited(ExitStatus {
                        code: Some(0),
                        signal: None,
                        guest_micros: 1,
                    }),
                ),
                send(
                    UNSOLICITED_ID,
                    GuestMessage::Stdout(b"unsolicited\n".to_vec()),
                ),
            ],
            _ => vec![],
        }
    }

    /// What is sent in answer to one host message.
    pub fn answer(&mut self, id: u64, msg: HostMessage) -> Vec<Action> {
        match msg {
            HostMessage::Shutdown => return vec![Action::PowerOff],
            _ if self.scenario == Scenario::Silent => return vec![],
            HostMessage::Ping => return vec![send(id, GuestMessage::Pong)],
            HostMessage::Exec(_) | HostMessage::Fs(_) | HostMessage::Init(_) if !self.lied => {
                // The one-shot lies answer a real request, so that a call is
                // pending on the host when they arrive.
                let lie = match self.scenario {
                    Scenario::Garbage => Some(garbage(id)),
                    Scenario::HugeFrame => Some(huge_frame()),
                    _ => None,
                };
                if let Some(bytes) = lie {
                    self.lied = true;
                    return vec![Action::Raw(bytes)];
                }
            }
            _ => {}
        }
        match msg {
            HostMessage::Init(_) => vec![send(id, GuestMessage::Ready)],
            HostMessage::Exec(_) => self.exec(id),
            HostMessage::Fs(request) => self.fs(id, request),
            HostMessage::Input(data) => match self.writes.get_mut(&id) {
                Some(bytes) => {
                    *bytes += data.len() as u64;
                    vec![send(id, GuestMessage::InputCredit(data.len() as u32))]
                }
                None => vec![],
            },
            HostMessage::InputEnd => match self.writes.remove(&id) {
                Some(bytes) => vec![send(id, GuestMessage::Fs(FsReply::Written { bytes }))],
                None => vec![],
            },
            // Stream control for processes that do not exist.
            _ => vec![],
        }
    }

    fn exec(&mut self, id: u64) -> Vec<Action> {
        let started = send(id, GuestMessage::Started { pid: FAKE_PID });
        match self.scenario {
            Scenario::NoStarted => vec![],
            Scenario::FloodOutput => vec![started, Action::Flood(id, Flood::Stdout)],
            _ => vec![
                started,
                send(
                    id,
                    GuestMessage::Exited(ExitStatus {
                        code: Some(0),
                        signal: None,
                        guest_micros: 1,
                    }),
                ),
            ],
        }
    }

    fn fs(&mut self, id: u64, request: FsRequest) -> Vec<Action> {
        let reply = |msg| send(id, GuestMessage::Fs(msg));
        match request {
            FsRequest::Stat { path, .. } => vec![reply(FsReply::Stat(self.stat(&path)))],
            FsRequest::List { path, .. } => match self.scenario {
                Scenario::FloodEntries => vec![Action::Flood(id, Flood::Entries)],
                _ => vec![reply(FsReply::Entries {
                    entries: self.list(&path),
                    more: false,
                })],
            },
            FsRequest::Read { path, .. } => {
                let content = match self.scenario {
                    Scenario::Traversal => TRAVERSAL_CONTENT,
                    Scenario::Modes => MODES_CONTENT,
                    Scenario::Meminfo if path == "/proc/meminfo" => MEMINFO_LIE,
                    _ => b"",
                };
                let mut actions = Vec::new();
                if !content.is_empty() {
                    actions.push(send(id, GuestMessage::Data(content.to_vec())));
                }
                actions.push(reply(FsReply::Done));
                actions
            }
            FsRequest::Write { .. } => {
                self.writes.insert(id, 0);
                vec![]
            }
            FsRequest::WriteFromTransfer { .. } => vec![reply(FsReply::Written { bytes: 0 })],
            FsRequest::Mkdir { .. }
            | FsRequest::Remove { .. }
            | FsRequest::Rename { .. }
            | FsRequest::Symlink { .. } => vec![reply(FsReply::Done)],
        }
    }

    fn stat(&self, path: &str) -> FileStat {
        match self.scenario {
            Scenario::Traversal => dir_stat(0o7777),
            Scenario::Modes if path.ends_with(".txt") => {
                file_stat(0o6777, MODES_CONTENT.len() as u64)
            }
            Scenario::Modes => dir_stat(0o7777),
            _ => dir_stat(0o755),
        }
    }

    fn list(&self, path: &str) -> Vec<DirEntry> {
        let entry = |name: &str, stat| DirEntry {
            name: name.to_string(),
            stat,
        };
        match self.scenario {
            Scenario::Traversal => {
                let file = || file_stat(0o644, TRAVERSAL_CONTENT.len() as u64);
                // The escaping names first: a host that joins names blindly
                // writes them before anything else can stop the copy.
                vec![
                    entry(&format!("../../escape-dotdot{}", self.suffix), file()),
                    entry(&format!("/tmp/escape-abs{}", self.suffix), file()),
                    entry("a/b", file()),
                    entry(".", file()),
                    entry("..", file()),
                    entry("nul\0name", file()),
                    entry("ok.txt", file()),
                ]
            }
            Scenario::Modes if path.trim_end_matches('/').ends_with("/sub") => {
                vec![entry(
                    "g.txt",
                    file_stat(0o6777, MODES_CONTENT.len() as u64),
                )]
            }
            Scenario::Modes => vec![
                entry("sub", dir_stat(0o7777)),
                entry("f.txt", file_stat(0o6777, MODES_CONTENT.len() as u64)),
            ],
            _ => vec![],
        }
    }
}

fn send(id: u64, msg: GuestMessage) -> Action {
    Action::Send(Envelope::new(id, msg))
}

fn dir_stat(mode: u32) -> FileStat {
    FileStat {
        kind: FileKind::Dir,
        size: 4096,
        mode,
        uid: 0,
        gid: 0,
        mtime_nanos: 0,
    }
}

fn file_stat(mode: u32, size: u64) -> FileStat {
    FileStat {
        kind: FileKind::File,
        size,
        mode,
        uid: 0,
        gid: 0,
        mtime_nanos: 0,
    }
}

/// A variant index no `GuestMessage` has.
const UNKNOWN_VARIANT: u64 = 200;

/// Random bytes sent after the undecodable frame.
const GARBAGE_TAIL: usize = 4096;

/// A frame whose length is right but whose payload names an unknown message
/// kind (postcard: varint id, varint variant index), then pseudo-random bytes.
pub fn garbage(id: u64) -> Vec<u8> {
    let mut payload = varint(id);
    payload.extend(varint(UNKNOWN_VARIANT));
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend(payload);
    // xorshift: reproducible across runs, so a failure can be replayed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ id;
    bytes.extend((0..GARBAGE_TAIL).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    bytes
}

/// A length prefix one byte over the limit, then a little of a body that a
/// host must not wait for.
pub fn huge_frame() -> Vec<u8> {
    let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    bytes.extend([0u8; 4096]);
    bytes
}

/// Postcard's unsigned varint (LEB128).
fn varint(value: u64) -> Vec<u8> {
    postcard::to_stdvec(&value).expect("a u64 always serializes")
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use msb_protocol::{ExecRequest, FrameCodec, FrameError, StdinMode};
    use tokio_util::codec::Decoder;

    use super::*;

    fn exec() -> HostMessage {
        HostMessage::Exec(ExecRequest {
            program: "true".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            user: None,
            stdin: StdinMode::Null,
            tty: None,
            output_window: 1 << 20,
        })
    }

    fn stat(path: &str) -> HostMessage {
        HostMessage::Fs(FsRequest::Stat {
            path: path.into(),
            follow_symlinks: true,
        })
    }

    fn list(path: &str) -> HostMessage {
        HostMessage::Fs(FsRequest::List {
            path: path.into(),
            max_entries: 1000,
        })
    }

    fn read(path: &str) -> HostMessage {
        HostMessage::Fs(FsRequest::Read {
            path: path.into(),
            output_window: 1 << 20,
        })
    }

    fn messages(actions: Vec<Action>) -> Vec<GuestMessage> {
        actions
            .into_iter()
            .map(|action| match action {
                Action::Send(envelope) => envelope.msg,
                other => panic!("expected a frame, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn meminfo_lies_only_about_proc_meminfo() {
        let mut session = Session::new(Scenario::Meminfo, "t");
        assert_eq!(
            messages(session.answer(7, read("/proc/meminfo"))),
            [
                GuestMessage::Data(MEMINFO_LIE.to_vec()),
                GuestMessage::Fs(FsReply::Done)
            ]
        );
        assert_eq!(
            messages(session.answer(8, read("/etc/hostname"))),
            [GuestMessage::Fs(FsReply::Done)]
        );
    }

    fn decode(bytes: &[u8]) -> Result<Option<Envelope<GuestMessage>>, FrameError> {
        FrameCodec::<GuestMessage, HostMessage>::new().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn every_scenario_but_silent_answers_ping_with_the_same_id() {
        for (name, scenario) in Scenario::ALL {
            assert_eq!(Scenario::parse(name), Some(scenario));
            let actions = Session::new(scenario, "").answer(77, HostMessage::Ping);
            if scenario == Scenario::Silent {
                assert_eq!(actions, vec![], "{name}");
            } else {
                assert_eq!(actions, vec![send(77, GuestMessage::Pong)], "{name}");
            }
        }
        assert_eq!(Scenario::parse("nope"), None);
    }

    #[test]
    fn shutdown_powers_off_in_every_scenario() {
        for (_, scenario) in Scenario::ALL {
            let actions = Session::new(scenario, "").answer(3, HostMessage::Shutdown);
            assert_eq!(actions, vec![Action::PowerOff]);
        }
    }

    #[test]
    fn traversal_lists_names_that_leave_the_directory() {
        let mut session = Session::new(Scenario::Traversal, "t1");
        let root = messages(session.answer(1, stat("/data")));
        assert!(matches!(
            &root[..],
            [GuestMessage::Fs(FsReply::Stat(FileStat {
                kind: FileKind::Dir,
                mode: 0o7777,
                ..
            }))]
        ));
        let [GuestMessage::Fs(FsReply::Entries {
            entries,
            more: false,
        })] = &messages(session.answer(2, list("/data")))[..]
        else {
            panic!("expected one final batch");
        };
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "../../escape-dotdot-t1",
                "/tmp/escape-abs-t1",
                "a/b",
                ".",
                "..",
                "nul\0name",
                "ok.txt"
            ]
        );
        assert_eq!(
            messages(session.answer(3, read("/data/ok.txt"))),
            vec![
                GuestMessage::Data(b"pwned".to_vec()),
                GuestMessage::Fs(FsReply::Done)
            ]
        );
    }

    #[test]
    fn modes_reports_a_tree_with_setuid_files_and_0o7777_dirs() {
        let mut session = Session::new(Scenario::Modes, "");
        let kind_and_mode = |msgs: Vec<GuestMessage>| match &msgs[..] {
            [GuestMessage::Fs(FsReply::Stat(stat))] => (stat.kind, stat.mode),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind_and_mode(messages(session.answer(1, stat("/data")))),
            (FileKind::Dir, 0o7777)
        );
        assert_eq!(
            kind_and_mode(messages(session.answer(2, stat("/data/f.txt")))),
            (FileKind::File, 0o6777)
        );
        let names = |msgs: Vec<GuestMessage>| match &msgs[..] {
            [GuestMessage::Fs(FsReply::Entries {
                entries,
                more: false,
            })] => entries
                .iter()
                .map(|e| (e.name.clone(), e.stat.kind, e.stat.mode))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            names(messages(session.answer(3, list("/data")))),
            [
                ("sub".to_string(), FileKind::Dir, 0o7777),
                ("f.txt".to_string(), FileKind::File, 0o6777)
            ]
        );
        assert_eq!(
            names(messages(session.answer(4, list("/data/sub")))),
            [("g.txt".to_string(), FileKind::File, 0o6777)]
        );
        assert_eq!(
            messages(session.answer(5, read("/data/sub/g.txt"))),
            vec![
                GuestMessage::Data(MODES_CONTENT.to_vec()),
                GuestMessage::Fs(FsReply::Done)
            ]
        );
    }

    #[test]
    fn floods_start_on_the_request_they_answer() {
        let mut entries = Session::new(Scenario::FloodEntries, "");
        assert_eq!(
            entries.answer(4, list("/")),
            vec![Action::Flood(4, Flood::Entries)]
        );
        let GuestMessage::Fs(FsReply::Entries {
            entries: batch,
            more: true,
        }) = Flood::Entries.message(9)
        else {
            panic!("a flood batch always says more");
        };
        assert_eq!(batch.len(), FLOOD_BATCH);
        assert!(batch.iter().all(|e| msb_protocol::is_entry_name(&e.name)));

        let mut output = Session::new(Scenario::FloodOutput, "");
        assert_eq!(
            output.answer(6, exec()),
            vec![
                send(6, GuestMessage::Started { pid: FAKE_PID }),
                Action::Flood(6, Flood::Stdout)
            ]
        );
        assert_eq!(Flood::Stdout.message(0).output_len(), Some(MAX_DATA_CHUNK));
    }

    #[test]
    fn unsolicited_opens_with_replies_for_an_unused_id() {
        let opening = Session::new(Scenario::Unsolicited, "").opening();
        assert_eq!(opening.len(), 2);
        assert!(opening
            .iter()
            .all(|a| matches!(a, Action::Send(e) if e.id == UNSOLICITED_ID)));
        assert_eq!(Session::new(Scenario::Traversal, "").opening(), vec![]);
    }

    #[test]
    fn garbage_is_well_framed_but_does_not_decode() {
        let mut session = Session::new(Scenario::Garbage, "");
        assert_eq!(
            session.answer(1, HostMessage::Ping),
            vec![send(1, GuestMessage::Pong)]
        );
        let actions = session.answer(300, stat("/"));
        let [Action::Raw(bytes)] = &actions[..] else {
            panic!("{actions:?}");
        };
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(len < 16);
        assert!(matches!(
            decode(&bytes[..4 + len]),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(bytes.len(), 4 + len + GARBAGE_TAIL);
        // The lie is told once; later requests get the honest answer.
        assert!(matches!(
            &session.answer(301, stat("/"))[..],
            [Action::Send(_)]
        ));
    }

    #[test]
    fn huge_frame_announces_more_than_the_limit() {
        let mut session = Session::new(Scenario::HugeFrame, "");
        let actions = session.answer(2, exec());
        let [Action::Raw(bytes)] = &actions[..] else {
            panic!("{actions:?}");
        };
        assert!(matches!(decode(bytes), Err(FrameError::TooLarge)));
    }

    #[test]
    fn no_started_ignores_execs_but_not_pings() {
        let mut session = Session::new(Scenario::NoStarted, "");
        assert_eq!(session.answer(5, exec()), vec![]);
        assert_eq!(session.answer(5, HostMessage::Kill), vec![]);
        assert_eq!(
            session.answer(6, HostMessage::Ping),
            vec![send(6, GuestMessage::Pong)]
        );
    }

    #[test]
    fn silent_answers_nothing() {
        let mut session = Session::new(Scenario::Silent, "");
        assert_eq!(session.opening(), vec![]);
        assert_eq!(session.answer(1, exec()), vec![]);
        assert_eq!(session.answer(2, stat("/")), vec![]);
    }

    #[test]
    fn honest_answers_complete_each_request() {
        let mut session = Session::new(Scenario::Unsolicited, "");
        let exec_replies = messages(session.answer(1, exec()));
        assert!(exec_replies.last().unwrap().ends_request());
        let write = HostMessage::Fs(FsRequest::Write {
            path: "/f".into(),
            mode: None,
            append: false,
            create_parents: false,
        });
        assert_eq!(session.answer(2, write), vec![]);
        assert_eq!(
            messages(session.answer(2, HostMessage::Input(vec![0; 10]))),
            vec![GuestMessage::InputCredit(10)]
        );
        assert_eq!(
            messages(session.answer(2, HostMessage::InputEnd)),
            vec![GuestMessage::Fs(FsReply::Written { bytes: 10 })]
        );
    }
}
