//! The request loop: greet the host, take `Init`, then route requests by id.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use msb_protocol::{
    Envelope, Failure, FailureKind, FrameCodec, FsRequest, GuestInit, GuestMessage, Hello,
    HostMessage, NO_REQUEST, VERSION,
};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::exec::{self, io_failure, Defaults, Exec};
use crate::fs::{self, Transfer};
use crate::input::InputEvent;
use crate::outbox::{self, Outbox};
use crate::reaper::Reaper;
use crate::{channel, rootfs, system};

/// Time running processes get between SIGTERM and SIGKILL at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type Codec = FrameCodec<HostMessage, GuestMessage>;

/// Serves the host until it asks for shutdown (`Ok`) or the channel fails.
pub async fn serve() -> io::Result<()> {
    let reaper = Reaper::start()?;
    let (port_in, port_out) = channel::open().await?;
    system::phase("agent port open");
    let mut frames_in = FramedRead::new(port_in, Codec::new());
    let outbox = outbox::start(FramedWrite::new(port_out, Codec::new()));
    outbox
        .send(Envelope::new(
            NO_REQUEST,
            GuestMessage::Hello(Hello {
                version: VERSION,
                agent_version: env!("CARGO_PKG_VERSION").into(),
            }),
        ))
        .await
        .map_err(|_| closed())?;

    let mut state = State {
        defaults: None,
        jobs: Arc::default(),
        reaper,
        outbox,
        transfer: None,
    };
    while let Some(frame) = frames_in.next().await {
        let Envelope { id, msg } = frame.map_err(io::Error::other)?;
        if msg == HostMessage::Shutdown {
            // Nothing more is sent: the host watches the VM exit.
            system::stop_all_processes(SHUTDOWN_GRACE);
            return Ok(());
        }
        state.handle(id, msg).await?;
    }
    Err(closed())
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "host channel closed")
}

struct State {
    /// Set once `Init` has succeeded.
    defaults: Option<Defaults>,
    /// Requests that take stream messages (input, credit, signals) by id.
    jobs: Arc<Mutex<HashMap<u64, Job>>>,
    reaper: Reaper,
    outbox: Outbox,
    /// The transfer share's directory, when the host provides one.
    transfer: Option<Arc<OwnedFd>>,
}

enum Job {
    Exec(Exec),
    Transfer(Transfer),
}

impl State {
    async fn handle(&mut self, id: u64, msg: HostMessage) -> io::Result<()> {
        match msg {
            HostMessage::Init(init) => {
                let reply = match self.init(*init) {
                    Ok(()) => GuestMessage::Ready,
                    Err(failure) => GuestMessage::Failed(failure),
                };
                self.reply(id, reply).await?;
            }
            HostMessage::Exec(request) => {
                if let Err(failure) = self.exec(id, request) {
                    self.reply(id, GuestMessage::Failed(failure)).await?;
                }
            }
            HostMessage::Fs(request) => {
                if let Err(failure) = self.fs(id, request) {
                    self.reply(id, GuestMessage::Failed(failure)).await?;
                }
            }
            // Stream control for a request that has already ended is dropped: the
            // host may have sent it before it saw the end.
            HostMessage::Input(data) => self.with_job(id, |job| job.input(InputEvent::Data(data))),
            HostMessage::InputEnd => self.with_job(id, |job| job.input(InputEvent::End)),
            HostMessage::Credit(bytes) => self.with_job(id, |job| job.credit(bytes)),
            HostMessage::Signal(signal) => self.with_exec(id, |e| e.signal(signal)),
            HostMessage::Kill => self.with_job(id, Job::kill),
            HostMessage::Resize(size) => self.with_exec(id, |e| e.resize(size)),
            HostMessage::Detach => self.with_exec(id, Exec::detach),
            HostMessage::Shutdown => unreachable!("handled by serve"),
            // Answered from the request loop itself: the host judges the
            // guest alive by it, so it must not wait behind any request.
            HostMessage::Ping => self.reply(id, GuestMessage::Pong).await?,
        }
        Ok(())
    }

    async fn reply(&self, id: u64, msg: GuestMessage) -> io::Result<()> {
        self.outbox
            .send(Envelope::new(id, msg))
            .await
            .map_err(|_| closed())
    }

    fn init(&mut self, init: GuestInit) -> Result<(), Failure> {
        if self.defaults.is_some() {
            return Err(Failure::new(
                FailureKind::InvalidRequest,
                "the guest is already initialised",
            ));
        }
        system::phase("init received");
        // First, before any process can draw from the generator or read the
        // clock: a guest restored from a snapshot carries the snapshot's.
        system::reseed_random(&init.entropy)
            .map_err(|err| io_failure("reseed the random generator", err))?;
        system::set_clock(init.realtime_ns).map_err(|err| io_failure("set the clock", err))?;
        if let Some(tag) = &init.transfer_tag {
            let dir = rootfs::mount_transfer(tag)
                .map_err(|err| io_failure("mount the transfer share", err))?;
            self.transfer = Some(Arc::new(dir));
        }
        rootfs::assemble(&init.root, &init.upper, &init.mounts)
            .map_err(|err| io_failure("assemble the root", err))?;
        system::phase("root assembled");
        nix::unistd::sethostname(&init.hostname)
            .map_err(|err| io_failure("set the hostname", err.into()))?;
        crate::net::configure(init.network.as_ref(), &init.hostname)
            .map_err(|err| io_failure("configure the network", err))?;
        if let Some(workdir) = &init.workdir {
            // Like Docker: an image's working directory exists even if no layer made it.
            std::fs::create_dir_all(workdir)
                .map_err(|err| io_failure("create the working directory", err))?;
        }
        let mut env = init.env;
        if let Some(pem) = &init.ca_certificate {
            let trust = crate::trust::install_ca(pem)
                .map_err(|err| io_failure("install the sandbox CA", err))?;
            for (name, value) in trust {
                env.retain(|(k, _)| *k != name);
                env.push((name, value));
            }
        }
        self.defaults = Some(Defaults {
            env,
            workdir: init.workdir,
        });
        Ok(())
    }

    fn check_new(&self, id: u64) -> Result<(), Failure> {
        if self.defaults.is_none() {
            return Err(Failure::new(
                FailureKind::InvalidRequest,
                "request before init",
            ));
        }
        if self.lock_jobs().contains_key(&id) {
            return Err(Failure::new(
                FailureKind::InvalidRequest,
                format!("request id {id} is already running"),
            ));
        }
        Ok(())
    }

    /// Removes the job when its task ends, before the task's final reply.
    fn on_end(&self, id: u64) -> impl FnOnce() + Send + 'static {
        let jobs = self.jobs.clone();
        move || {
            jobs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }

    fn exec(&mut self, id: u64, request: msb_protocol::ExecRequest) -> Result<(), Failure> {
        self.check_new(id)?;
        let defaults = self.defaults.as_ref().expect("checked by check_new");
        let started = exec::spawn(
            id,
            request,
            defaults,
            &self.reaper,
            self.outbox.clone(),
            self.on_end(id),
        )?;
        // Nothing ran between spawn and here (single-threaded), so the exit
        // task cannot have removed the id yet.
        self.lock_jobs().insert(id, Job::Exec(started));
        Ok(())
    }

    fn fs(&mut self, id: u64, request: FsRequest) -> Result<(), Failure> {
        self.check_new(id)?;
        let transfer_dir = self.transfer.clone();
        if let Some(transfer) = fs::start(
            id,
            request,
            transfer_dir,
            self.outbox.clone(),
            self.on_end(id),
        ) {
            self.lock_jobs().insert(id, Job::Transfer(transfer));
        }
        Ok(())
    }

    fn with_job(&self, id: u64, f: impl FnOnce(&Job)) {
        if let Some(job) = self.lock_jobs().get(&id) {
            f(job);
        }
    }

    fn with_exec(&self, id: u64, f: impl FnOnce(&Exec)) {
        self.with_job(id, |job| {
            if let Job::Exec(exec) = job {
                f(exec);
            }
        });
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Job {
    fn input(&self, event: InputEvent) {
        match self {
            Job::Exec(exec) => exec.input(event),
            Job::Transfer(Transfer::Write(input)) => {
                let _ = input.send(event);
            }
            Job::Transfer(Transfer::Read(_)) => {}
        }
    }

    /// Ends the job early: a process tree is killed, a read stops, a write is
    /// closed with what it has.
    fn kill(&self) {
        match self {
            Job::Exec(exec) => exec.kill(),
            Job::Transfer(Transfer::Read(window)) => window.close(),
            Job::Transfer(Transfer::Write(input)) => {
                let _ = input.send(InputEvent::End);
            }
        }
    }

    fn credit(&self, bytes: u32) {
        match self {
            Job::Exec(exec) => exec.add_credit(bytes),
            Job::Transfer(Transfer::Read(window)) => window.add_credit(bytes),
            Job::Transfer(Transfer::Write(_)) => {}
        }
    }
}
