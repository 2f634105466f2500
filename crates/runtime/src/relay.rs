//! Boot the VM, then relay between clients and agent until the VM is gone.
//!
//! Single thread: one `select!` loop owns the clients' routes, the control
//! socket, the agent channel and the VM process, so no state is shared; client
//! connections are read and written by small tasks ([`crate::clients`]) and the
//! console is recorded by a task of its own. The loop ends when the VM exits. If
//! the creator's connection closes first (its process died) and the sandbox is
//! not detached, the VM is killed: such a sandbox never outlives its creator. A
//! detached one runs on until a client stops it, or its idle timeout or maximum
//! lifetime ends it.
//!
//! Status: the runtime records the run's status in the state database
//! ([`crate::record`]): running once booted, stopping, then stopped or crashed
//! with the reason, written before the clients hear `Stopped`.
//!
//! Trust: the guest is hostile. Frames it sends are size-checked by the codec,
//! and every message is judged by the [`Guard`] before it reaches the client: a
//! violation kills the VM and the exit report says why.
//!
//! Liveness: after boot the loop sends the agent a `Ping` every
//! [`PING_INTERVAL`]; a guest that has left one unanswered for
//! [`LIVENESS_TIMEOUT`] (halted, hung, or an impostor gone quiet) is killed, so
//! no caller waits forever on a guest that will never answer.

use std::fs::File;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use msb_control::{
    files, BootInfo, BootSpec, FromRuntime, HostEnded, LifecycleSpec, RuntimeFailure,
    RuntimeFailureKind, ToRuntime, VmExit,
};
use msb_netstack::{NetError, NetStack, SecretKill};
use msb_protocol::{
    check_version, Envelope, FrameCodec, FsReply, FsRequest, GuestMessage, Hello, HostMessage,
    INIT_ID, LIVENESS_ID, NO_REQUEST,
};
use msb_vmm::{Controller, GuestLinks, Start, VmProcess};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use crate::clients::{ClientEvent, ClientId, Clients};
use crate::console::{self, ConsoleTail};
use crate::events::EventLog;
use crate::guard::Guard;
use crate::metrics::{MetricsSource, MEMINFO, MEMINFO_WINDOW};
use crate::record::RunRecord;
use crate::secrets;
use crate::settings::RuntimeSettings;
use crate::snapshot::{Template, Templates};

type AgentLink = Framed<UnixStream, FrameCodec<GuestMessage, HostMessage>>;

/// How often the agent is asked whether it is alive.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long a ping may stay unanswered before the guest counts as gone.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a restored VM gets to load its template's state and run.
const RESUME_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a VM whose restore failed gets to exit with its reason.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(1);

/// Bytes of host entropy each `Init` carries (the kernel's generator keys are 32).
const GUEST_ENTROPY: usize = 64;

/// How long to wait for the console to drain after the VM died, for error reports.
const CONSOLE_DRAIN: Duration = Duration::from_millis(500);

/// How long the guest gets to send its `/proc/meminfo` for metrics; after
/// that the metrics are answered without its memory figures.
const MEMINFO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a guest gets to shut down when the runtime stops it itself (idle
/// timeout, maximum lifetime).
const SELF_STOP_GRACE: Duration = Duration::from_secs(10);

/// Serves one client connection for the life of one VM.
pub async fn run(client: UnixStream, settings: &RuntimeSettings) -> std::io::Result<()> {
    let mut client = Framed::new(client, FrameCodec::new());
    let (boot_id, mut spec) = match client.next().await {
        None => return Ok(()),
        Some(Err(err)) => return Err(std::io::Error::other(err)),
        Some(Ok(Envelope {
            id,
            msg: ToRuntime::Boot(spec),
        })) => (id, spec),
        Some(Ok(Envelope { id, .. })) => {
            let failure = failure(
                RuntimeFailureKind::BadRequest,
                "the first request must be Boot",
            );
            let _ = client
                .send(Envelope::new(id, FromRuntime::Failed(failure)))
                .await;
            return Ok(());
        }
    };

    // The network first: a published port that is taken fails the boot
    // before any VM starts.
    let network = match &spec.network {
        None => None,
        Some(config) => match NetStack::new(config.clone()).await {
            Ok(stack) => Some(stack),
            Err(err) => {
                let kind = match err {
                    NetError::PortInUse { .. } => RuntimeFailureKind::PortInUse,
                    _ => RuntimeFailureKind::Launch,
                };
                let failure = failure(kind, format!("{:#}", anyhow::Error::new(err)));
                let _ = client
                    .send(Envelope::new(boot_id, FromRuntime::Failed(failure)))
                    .await;
                return Ok(());
            }
        },
    };
    // Secrets next: placeholders into the guest's environment, the CA into its trust store,
    // the values into the stack's interceptor. The values leave the spec here (they are zeroed
    // when the last copy is dropped).
    let mut network = network;
    let mut secret_kills = None;
    if let Some(config) = spec.secrets.take() {
        match secrets::prepare(config, &mut spec.guest) {
            Ok(None) => {}
            Ok(Some((interception, kills))) => {
                network = network.map(|stack| stack.with_interception(interception));
                secret_kills = Some(kills);
            }
            Err(message) => {
                let failure = failure(RuntimeFailureKind::Launch, message);
                let _ = client
                    .send(Envelope::new(boot_id, FromRuntime::Failed(failure)))
                    .await;
                return Ok(());
            }
        }
    }
    let published = network
        .as_ref()
        .map(NetStack::published)
        .unwrap_or_default();
    let net_stats = network.as_ref().map(NetStack::stats);
    let events = EventLog::create(&spec.sandbox_dir.join(files::EVENTS_LOG));
    let templates = spec
        .snapshots
        .clone()
        .map(|policy| Templates::new(policy, msb_vmm::select(spec.vm.backend, &settings.vmm)));
    let boot_timeout = Duration::from_millis(spec.boot_timeout_ms);
    let template = match &templates {
        None => None,
        Some(templates) => tokio::select! {
            prepared = templates.prepare(&spec.vm, boot_timeout) => match prepared {
                Ok(template) => {
                    if let Some(reason) = &template.replaced {
                        events.runtime(&format!("snapshot {} unusable ({reason}); made again", template.key));
                    }
                    if let Some(took) = template.built_in {
                        events.runtime(&format!("snapshot {} built in {} ms", template.key, took.as_millis()));
                    }
                    Some(template)
                }
                Err(reason) => {
                    tracing::info!(%reason, "no template snapshot: booting cold");
                    None
                }
            },
            // The client left: nobody will use this sandbox.
            _ = client.next() => return Ok(()),
        },
    };
    let mut vm = match Vm::launch(&spec, network, settings, events.clone(), template.as_ref()) {
        Ok(vm) => vm,
        Err(failure) => {
            let _ = client
                .send(Envelope::new(boot_id, FromRuntime::Failed(failure)))
                .await;
            return Ok(());
        }
    };
    let booted = tokio::select! {
        booted = vm.boot(&spec, template.zip(templates.as_ref())) => booted,
        // The client left while the VM was booting: nobody will use it.
        _ = client.next() => {
            vm.kill().await;
            return Ok(());
        }
    };
    match booted {
        Ok(mut info) => {
            info.published = published
                .iter()
                .map(|(mapping, bound)| (*bound, mapping.guest_port))
                .collect();
            tracing::info!(accel = ?info.accel, boot_ms = info.boot_ms, "sandbox ready");
            events.runtime(&format!(
                "booted in {} ms ({:?}); agent {}",
                info.boot_ms, info.accel, info.agent_version
            ));
            let listener = match bind_control_socket(&spec.lifecycle.socket) {
                Ok(listener) => listener,
                Err(err) => {
                    vm.kill().await;
                    let message = format!(
                        "cannot listen on the control socket {}: {err}",
                        spec.lifecycle.socket.display()
                    );
                    let _ = client
                        .send(Envelope::new(
                            boot_id,
                            FromRuntime::Failed(failure(RuntimeFailureKind::Launch, message)),
                        ))
                        .await;
                    return Ok(());
                }
            };
            let record = RunRecord::new(&spec.lifecycle);
            record.running();
            client
                .send(Envelope::new(boot_id, FromRuntime::Booted(info.clone())))
                .await
                .map_err(std::io::Error::other)?;
            let parts = client.into_parts();
            let mut clients = Clients::default();
            let creator = clients.add(parts.io, &parts.read_buf);
            let metrics = MetricsSource {
                vm_pid: info.vm_pid,
                booted: Instant::now(),
                net: net_stats,
                memory_kib: spec.vm.memory_mib as u64 * 1024,
            };
            let relay = Relay {
                events,
                clients,
                creator,
                metrics,
                meminfo: None,
                lifecycle: spec.lifecycle.clone(),
                info,
                listener,
                record,
            };
            relay.run(vm, secret_kills).await
        }
        Err(mut failure) => {
            vm.kill().await;
            failure.console_tail = vm.final_console_tail().await;
            tracing::warn!(message = %failure.message, "boot failed");
            events.runtime(&format!("boot failed: {}", failure.message));
            let _ = client
                .send(Envelope::new(boot_id, FromRuntime::Failed(failure)))
                .await;
            Ok(())
        }
    }
}

fn failure(kind: RuntimeFailureKind, message: impl Into<String>) -> RuntimeFailure {
    RuntimeFailure {
        kind,
        message: message.into(),
        console_tail: String::new(),
    }
}

struct Vm {
    process: VmProcess,
    backend: Box<dyn msb_vmm::Backend>,
    agent: AgentLink,
    console_tail: ConsoleTail,
    console_task: JoinHandle<()>,
    vmm_log: std::path::PathBuf,
    launched: Instant,
    /// The guest ends of the links, kept while a restored VM may still have to
    /// give way to a cold boot. Nothing crosses them before `Init`: the guest's
    /// network is down and its agent waits, so a second VM can take them over.
    spare: Option<GuestLinks>,
    /// The host end of a restored VM's control link, until it is resumed.
    control: Option<std::os::fd::OwnedFd>,
    events: EventLog,
}

impl Vm {
    fn launch(
        spec: &BootSpec,
        network: Option<NetStack>,
        settings: &RuntimeSettings,
        events: EventLog,
        template: Option<&Template>,
    ) -> Result<Vm, RuntimeFailure> {
        let launch_failure = |what: &str, err: &dyn std::fmt::Display| {
            failure(RuntimeFailureKind::Launch, format!("{what}: {err}"))
        };
        let (agent_host, agent_guest) =
            socket_pair().map_err(|e| launch_failure("agent channel", &e))?;
        let (console_host, console_guest) =
            socket_pair().map_err(|e| launch_failure("console channel", &e))?;
        let vmm_log = spec.sandbox_dir.join(files::VMM_LOG);
        let vmm_log_file = File::create(&vmm_log).map_err(|e| launch_failure("vmm log", &e))?;
        let (net_host, net_guest) = match network {
            Some(_) => {
                let (host, guest) =
                    socket_pair().map_err(|e| launch_failure("network link", &e))?;
                (Some(host), Some(guest.into()))
            }
            None => (None, None),
        };
        let links = GuestLinks {
            agent: agent_guest.into(),
            console: console_guest.into(),
            net: net_guest,
        };
        let backend = msb_vmm::select(spec.vm.backend, &settings.vmm);
        let (start, links, spare, control) = match template {
            None => (Start::Cold, links, None, None),
            Some(template) => {
                let (control_host, control_guest) =
                    StdUnixStream::pair().map_err(|e| launch_failure("control link", &e))?;
                let ram = template
                    .ram
                    .try_clone()
                    .map_err(|e| launch_failure("template memory", &e))?;
                let start = Start::Restore {
                    ram,
                    control: control_guest.into(),
                    accel: template.accel,
                };
                let copies = clone_links(&links).map_err(|e| launch_failure("links", &e))?;
                (start, copies, Some(links), Some(control_host.into()))
            }
        };
        let launched = Instant::now();
        let process = start_vm(backend.as_ref(), spec, links, vmm_log_file, start)?;

        if let (Some(stack), Some(link)) = (network, net_host) {
            tokio::spawn(async move {
                if let Err(err) = stack.run(link).await {
                    tracing::warn!(%err, "network stack stopped");
                }
            });
        }
        let console_tail = ConsoleTail::default();
        let console_path = spec.sandbox_dir.join(files::CONSOLE_LOG);
        let tail = console_tail.clone();
        let console_events = events.clone();
        let console_task = tokio::spawn(async move {
            if let Err(err) =
                console::record(console_host, &console_path, tail, console_events).await
            {
                tracing::warn!(%err, "console recording stopped");
            }
        });
        Ok(Vm {
            process,
            backend,
            agent: Framed::new(agent_host, FrameCodec::new()),
            console_tail,
            console_task,
            vmm_log,
            launched,
            spare,
            control,
            events,
        })
    }

    /// Brings the guest up: resumes `template` (falling back to a cold boot if
    /// that fails) or waits for the agent's greeting, then sends `Init` and
    /// waits for `Ready`.
    async fn boot(
        &mut self,
        spec: &BootSpec,
        template: Option<(Template, &Templates)>,
    ) -> Result<BootInfo, RuntimeFailure> {
        let booted = self.boot_inner(spec, template).await;
        // From here on a VM's links are its own: its end closes them.
        self.spare = None;
        booted
    }

    async fn boot_inner(
        &mut self,
        spec: &BootSpec,
        template: Option<(Template, &Templates)>,
    ) -> Result<BootInfo, RuntimeFailure> {
        if let Some((template, templates)) = template {
            match self.resume(&template).await {
                Ok(()) => {
                    self.events.runtime(&format!(
                        "restored from snapshot {} in {} ms",
                        template.key,
                        self.launched.elapsed().as_millis()
                    ));
                    return self.init(spec, template.hello).await;
                }
                Err(reason) => {
                    tracing::warn!(%reason, key = %template.key, "template snapshot unusable");
                    self.events.runtime(&format!(
                        "snapshot {} unusable ({reason}); booting cold",
                        template.key
                    ));
                    templates.discard(&template);
                    self.relaunch_cold(spec).await?;
                }
            }
        }
        let deadline = self.launched + Duration::from_millis(spec.boot_timeout_ms);
        let hello = match self.next_boot_message(deadline).await? {
            Envelope {
                id: NO_REQUEST,
                msg: GuestMessage::Hello(hello),
            } => hello,
            other => {
                return Err(boot_failure(format!(
                    "expected the agent's greeting, got {other:?}"
                )))
            }
        };
        check_version(&hello).map_err(|e| boot_failure(e.to_string()))?;
        self.init(spec, hello).await
    }

    /// Loads the template's state into the VM started for it and runs it.
    async fn resume(&mut self, template: &Template) -> Result<(), String> {
        let control = self.control.take().ok_or("no control link")?;
        let resumed = async {
            let mut controller = Controller::connect(control).await?;
            controller.resume(&template.state).await
        };
        let failed = tokio::select! {
            resumed = resumed => match resumed {
                Ok(()) => return Ok(()),
                Err(err) => err.to_string(),
            },
            status = self.process.child.wait() => return Err(exit_report("the VM exited", status, &self.vmm_log)),
            _ = tokio::time::sleep(RESUME_TIMEOUT) => return Err("the VM did not resume in time".into()),
        };
        // A QEMU that refuses the state says why in its log as it exits,
        // which is also what closes the control link.
        match tokio::time::timeout(EXIT_REPORT_WAIT, self.process.child.wait()).await {
            Ok(status) => Err(exit_report("the VM exited", status, &self.vmm_log)),
            Err(_) => Err(failed),
        }
    }

    /// Replaces a VM that could not be restored with one that boots the kernel,
    /// on the same links.
    async fn relaunch_cold(&mut self, spec: &BootSpec) -> Result<(), RuntimeFailure> {
        let _ = self.process.child.kill().await;
        let links = self
            .spare
            .take()
            .ok_or_else(|| boot_failure("no links left for a cold boot"))?;
        // Appended: the restore's own complaint stays in the log.
        let vmm_log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.vmm_log)
            .map_err(|e| failure(RuntimeFailureKind::Launch, format!("vmm log: {e}")))?;
        self.launched = Instant::now();
        self.process = start_vm(self.backend.as_ref(), spec, links, vmm_log, Start::Cold)?;
        Ok(())
    }

    /// Sends `Init`, with fresh entropy and the clock, and waits for `Ready`.
    async fn init(&mut self, spec: &BootSpec, hello: Hello) -> Result<BootInfo, RuntimeFailure> {
        let deadline = self.launched + Duration::from_millis(spec.boot_timeout_ms);
        let mut guest = spec.guest.clone();
        guest.entropy = fresh_entropy().map_err(|e| boot_failure(format!("entropy: {e}")))?;
        guest.realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.agent
            .send(Envelope::new(INIT_ID, HostMessage::Init(Box::new(guest))))
            .await
            .map_err(|e| boot_failure(format!("agent channel failed: {e}")))?;
        match self.next_boot_message(deadline).await? {
            Envelope {
                id: INIT_ID,
                msg: GuestMessage::Ready,
            } => {}
            Envelope {
                id: INIT_ID,
                msg: GuestMessage::Failed(f),
            } => return Err(boot_failure(format!("guest setup failed: {}", f.message))),
            other => return Err(boot_failure(format!("expected Ready, got {other:?}"))),
        }
        Ok(BootInfo {
            accel: self.process.accel,
            vm_pid: self.process.child.id().unwrap_or(0),
            agent_version: hello.agent_version,
            boot_ms: self.launched.elapsed().as_millis() as u64,
            published: vec![],
        })
    }

    async fn next_boot_message(
        &mut self,
        deadline: Instant,
    ) -> Result<Envelope<GuestMessage>, RuntimeFailure> {
        tokio::select! {
            frame = self.agent.next() => match frame {
                Some(Ok(envelope)) => Ok(envelope),
                Some(Err(err)) => Err(boot_failure(format!("agent channel failed: {err}"))),
                None => Err(boot_failure("agent channel closed during boot")),
            },
            status = self.process.child.wait() => {
                Err(boot_failure(exit_report("the VM exited during boot", status, &self.vmm_log)))
            }
            _ = tokio::time::sleep_until(deadline.into()) => Err(boot_failure(format!(
                "the guest agent was not ready within {} ms",
                deadline.duration_since(self.launched).as_millis()
            ))),
        }
    }

    async fn kill(&mut self) {
        let _ = self.process.child.kill().await;
    }

    /// The console's last lines once the VM is dead and its console drained.
    async fn final_console_tail(&mut self) -> String {
        let _ = tokio::time::timeout(CONSOLE_DRAIN, &mut self.console_task).await;
        self.console_tail.text()
    }
}

/// `what` with the VM's exit status and the end of its VMM log, which is
/// where QEMU says why it stopped.
pub(crate) fn exit_report(
    what: &str,
    status: std::io::Result<std::process::ExitStatus>,
    vmm_log: &std::path::Path,
) -> String {
    let status = status
        .map(|s| s.to_string())
        .unwrap_or_else(|e| e.to_string());
    format!("{what} ({status}){}", vmm_tail(vmm_log))
}

/// `": "` and the end of a VMM log, or nothing when it is empty.
pub(crate) fn vmm_tail(vmm_log: &std::path::Path) -> String {
    let tail = files::tail(vmm_log, 2048);
    match tail.trim() {
        "" => String::new(),
        tail => format!(": {tail}"),
    }
}

/// Starts `backend`'s VM, turning its errors into the creator's failure.
fn start_vm(
    backend: &dyn msb_vmm::Backend,
    spec: &BootSpec,
    links: GuestLinks,
    vmm_log: File,
    start: Start,
) -> Result<VmProcess, RuntimeFailure> {
    backend
        .launch(&spec.vm, links, vmm_log, start)
        .map_err(|e| match e {
            // Not a failure of this VM but of the host's setup: say what to install.
            msb_vmm::LaunchError::ProgramNotFound { .. } => {
                failure(RuntimeFailureKind::MissingProgram, e.to_string())
            }
            e => failure(
                RuntimeFailureKind::Launch,
                format!("cannot start the VM: {:#}", anyhow::Error::new(e)),
            ),
        })
}

/// Copies of the guest ends, for a VM that may have to give them back.
fn clone_links(links: &GuestLinks) -> std::io::Result<GuestLinks> {
    Ok(GuestLinks {
        agent: links.agent.try_clone()?,
        console: links.console.try_clone()?,
        net: links.net.as_ref().map(|n| n.try_clone()).transpose()?,
    })
}

/// Bytes for the guest's generator, from the host's.
fn fresh_entropy() -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; GUEST_ENTROPY];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer,
        // which lives across the call.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(bytes)
}

fn boot_failure(message: impl Into<String>) -> RuntimeFailure {
    failure(RuntimeFailureKind::Boot, message)
}

/// The relay loop's own state, beside the VM it serves.
struct Relay {
    events: EventLog,
    clients: Clients,
    /// The creator's connection: its end kills a sandbox that is not detached.
    creator: ClientId,
    lifecycle: LifecycleSpec,
    /// Answer to every `Attach`.
    info: BootInfo,
    listener: UnixListener,
    record: RunRecord,
    metrics: MetricsSource,
    /// The guest's `/proc/meminfo` being read for the clients waiting on metrics.
    meminfo: Option<MeminfoRead>,
}

struct MeminfoRead {
    agent_id: u64,
    text: Vec<u8>,
    deadline: Instant,
    /// Clients and their request ids, to answer with `Metrics`.
    waiters: Vec<(ClientId, u64)>,
}

impl Relay {
    /// Relays until the VM exits. Owns everything; see the module doc.
    async fn run(
        mut self,
        mut vm: Vm,
        mut secret_kills: Option<tokio::sync::mpsc::Receiver<SecretKill>>,
    ) -> std::io::Result<()> {
        let mut guard = Guard::default();
        let mut agent_open = true;
        // Who asked for the stop (client and its request id), and by when the
        // guest must have finished shutting down.
        let mut stop_requests: Vec<(ClientId, u64)> = Vec::new();
        let mut stop_deadline: Option<Instant> = None;
        let mut ended_by_host: Option<HostEnded> = None;
        let mut pings = tokio::time::interval(PING_INTERVAL);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the oldest unanswered ping was sent; `None` while all are answered.
        let mut unanswered_since: Option<Instant> = None;
        let started = Instant::now();
        let mut last_activity = started;
        let lifetime_end = self
            .lifecycle
            .max_lifetime_ms
            .map(|ms| started + Duration::from_millis(ms));

        let status = loop {
            let stopping = stop_deadline.is_some();
            tokio::select! {
                status = vm.process.child.wait() => break status,
                event = self.clients.next() => match event {
                    ClientEvent::Message(client, Envelope { id, msg }) => match msg {
                        ToRuntime::Agent(msg) => {
                            last_activity = Instant::now();
                            let Some(agent_id) = self.clients.agent_id(client, id, &msg) else {
                                continue;
                            };
                            tracing::trace!(client, id, agent_id, ?msg, "to agent");
                            guard.on_host(agent_id, &msg);
                            if agent_open && vm.agent.send(Envelope::new(agent_id, msg)).await.is_err() {
                                agent_open = false;
                            }
                        }
                        ToRuntime::Stop { grace_ms } => {
                            stop_requests.push((client, id));
                            if !stopping {
                                self.record.stopping();
                                self.events.runtime("stop requested");
                                if agent_open {
                                    let _ = vm.agent.send(Envelope::new(NO_REQUEST, HostMessage::Shutdown)).await;
                                }
                            }
                            let deadline = Instant::now() + Duration::from_millis(grace_ms as u64);
                            stop_deadline = Some(stop_deadline.map_or(deadline, |d| d.min(deadline)));
                        }
                        ToRuntime::Kill => {
                            stop_requests.push((client, id));
                            if !stopping {
                                self.record.stopping();
                            }
                            self.events.runtime("kill requested");
                            let _ = vm.process.child.start_kill();
                            stop_deadline = Some(Instant::now());
                        }
                        ToRuntime::Metrics => {
                            // Host counters at once; the guest's memory figures need one
                            // read of its /proc/meminfo, shared by every client asking meanwhile.
                            if let Some(read) = &mut self.meminfo {
                                read.waiters.push((client, id));
                                continue;
                            }
                            let agent_id = self.clients.internal_id();
                            let read = HostMessage::Fs(FsRequest::Read {
                                path: MEMINFO.into(),
                                output_window: MEMINFO_WINDOW,
                            });
                            guard.on_host(agent_id, &read);
                            if agent_open && vm.agent.send(Envelope::new(agent_id, read)).await.is_ok() {
                                self.meminfo = Some(MeminfoRead {
                                    agent_id,
                                    text: Vec::new(),
                                    deadline: Instant::now() + MEMINFO_TIMEOUT,
                                    waiters: vec![(client, id)],
                                });
                            } else {
                                self.clients.send(client, id, FromRuntime::Metrics(self.metrics.sample(None)));
                            }
                        }
                        ToRuntime::Attach => {
                            last_activity = Instant::now();
                            self.clients.send(client, id, FromRuntime::Attached(self.info.clone()));
                        }
                        ToRuntime::Boot(_) => {
                            let reply = failure(RuntimeFailureKind::BadRequest, "already booted");
                            self.clients.send(client, id, FromRuntime::Failed(reply));
                        }
                    },
                    ClientEvent::Left(client) => {
                        let orphaned = self.clients.remove(client);
                        if client == self.creator && !self.lifecycle.detached {
                            tracing::info!("the creator left; killing the VM");
                            ended_by_host.get_or_insert(HostEnded::CreatorLeft);
                            agent_open = false;
                            let _ = vm.process.child.start_kill();
                            continue;
                        }
                        // Nobody reads these requests' output any more: the guest
                        // discards it and the processes run on, as for a handle
                        // dropped unread.
                        for agent_id in orphaned {
                            guard.on_host(agent_id, &HostMessage::Detach);
                            if agent_open && vm.agent.send(Envelope::new(agent_id, HostMessage::Detach)).await.is_err() {
                                agent_open = false;
                            }
                        }
                    }
                },
                accepted = self.listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        if same_user(&stream) {
                            self.clients.add(stream, &[]);
                        } else {
                            tracing::warn!("refused a control connection from another user");
                        }
                    }
                }
                frame = vm.agent.next(), if agent_open => match frame {
                    Some(Ok(Envelope { id, msg })) => {
                        tracing::trace!(id, ?msg, "from agent");
                        if id == LIVENESS_ID && msg == GuestMessage::Pong {
                            unanswered_since = None;
                            continue;
                        }
                        if let Err(violation) = guard.on_guest(id, &msg) {
                            tracing::warn!(%violation, "guest protocol violation; killing the VM");
                            ended_by_host = Some(HostEnded::ProtocolViolation(violation.to_string()));
                            agent_open = false;
                            let _ = vm.process.child.start_kill();
                            continue;
                        }
                        if self.meminfo.as_ref().is_some_and(|read| read.agent_id == id) {
                            self.on_meminfo(msg);
                            continue;
                        }
                        if let Some((client, client_id)) = self.clients.route(id, msg.ends_request()) {
                            self.clients.send(client, client_id, FromRuntime::Agent(msg));
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(%err, "agent channel failed; killing the VM");
                        if !stopping {
                            ended_by_host = Some(HostEnded::ProtocolViolation(format!(
                                "the agent channel failed: {err}"
                            )));
                        }
                        agent_open = false;
                        let _ = vm.process.child.start_kill();
                    }
                    None => agent_open = false,
                },
                _ = pings.tick(), if agent_open && !stopping && ended_by_host.is_none() => {
                    let now = Instant::now();
                    match unanswered_since {
                        Some(since) if now.duration_since(since) >= LIVENESS_TIMEOUT => {
                            let silent_ms = now.duration_since(since).as_millis() as u64;
                            tracing::warn!(silent_ms, "the guest stopped answering; killing the VM");
                            ended_by_host = Some(HostEnded::Unresponsive { silent_ms });
                            agent_open = false;
                            let _ = vm.process.child.start_kill();
                            continue;
                        }
                        Some(_) => {}
                        None => unanswered_since = Some(now),
                    }
                    if vm.agent.send(Envelope::new(LIVENESS_ID, HostMessage::Ping)).await.is_err() {
                        agent_open = false;
                    }
                    // Checked at the ping's pace: an idle timeout is honoured to the second.
                    if let Some(idle_ms) = self.lifecycle.idle_timeout_ms {
                        let idle = now.duration_since(last_activity);
                        if !self.clients.any_open() && idle >= Duration::from_millis(idle_ms) {
                            tracing::info!(idle_ms, "idle timeout; stopping the VM");
                            ended_by_host = Some(HostEnded::IdleTimeout { idle_ms });
                            self.stop_by_itself(&mut vm, agent_open, &mut stop_deadline).await;
                        }
                    }
                },
                _ = sleep_until_opt(lifetime_end), if ended_by_host.is_none() && !stopping => {
                    let lifetime_ms = self.lifecycle.max_lifetime_ms.unwrap_or(0);
                    tracing::info!(lifetime_ms, "maximum lifetime reached; stopping the VM");
                    ended_by_host = Some(HostEnded::MaxLifetime { lifetime_ms });
                    self.stop_by_itself(&mut vm, agent_open, &mut stop_deadline).await;
                }
                Some(kill) = next_kill(&mut secret_kills), if ended_by_host.is_none() => {
                    tracing::warn!(secret = %kill.secret, host = %kill.host, reason = %kill.reason,
                        "secret violation under block-and-kill; killing the VM");
                    ended_by_host = Some(HostEnded::SecretViolation {
                        secret: kill.secret,
                        host: kill.host,
                        reason: kill.reason,
                    });
                    agent_open = false;
                    let _ = vm.process.child.start_kill();
                }
                _ = sleep_until_opt(self.meminfo.as_ref().map(|read| read.deadline)) => {
                    // The guest is slow to answer: metrics without its figures. A late
                    // answer is routed nowhere.
                    if let Some(read) = self.meminfo.take() {
                        self.answer_metrics(read.waiters, None);
                    }
                }
                _ = sleep_until_opt(stop_deadline) => {
                    tracing::info!("guest did not stop in time; killing the VM");
                    let _ = vm.process.child.start_kill();
                    stop_deadline = Some(Instant::now() + Duration::from_secs(3600));
                }
            }
        };

        let (code, signal) = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                (status.code(), status.signal())
            }
            Err(_) => (None, None),
        };
        let console_tail = vm.final_console_tail().await;
        let exit = VmExit {
            code,
            signal,
            requested: !stop_requests.is_empty() && ended_by_host.is_none(),
            ended_by_host,
            console_tail,
        };
        tracing::info!(?code, ?signal, requested = exit.requested, "VM exited");
        let _ = std::fs::remove_file(&self.lifecycle.socket);
        self.record.ended(&exit);
        self.events.runtime(&format!("ended: {}", exit.describe()));
        for client in self.clients.connected() {
            let answer_id = stop_requests
                .iter()
                .find(|(asker, _)| *asker == client)
                .map_or(NO_REQUEST, |(_, id)| *id);
            self.clients
                .send(client, answer_id, FromRuntime::Stopped(exit.clone()));
        }
        self.clients.flush().await;
        Ok(())
    }

    /// A message of the guest's answer to the metrics' `/proc/meminfo` read
    /// (already judged by the guard, which bounds it to the read's window).
    fn on_meminfo(&mut self, msg: GuestMessage) {
        let Some(read) = &mut self.meminfo else {
            return;
        };
        if let GuestMessage::Data(bytes) = &msg {
            read.text.extend_from_slice(bytes);
        }
        if msg.ends_request() {
            let read = self.meminfo.take().expect("checked above");
            let text = matches!(msg, GuestMessage::Fs(FsReply::Done)).then_some(read.text);
            self.answer_metrics(read.waiters, text.as_deref());
        }
    }

    fn answer_metrics(&self, waiters: Vec<(ClientId, u64)>, meminfo: Option<&[u8]>) {
        let sample = self.metrics.sample(meminfo);
        for (client, id) in waiters {
            self.clients.send(client, id, FromRuntime::Metrics(sample));
        }
    }

    /// Asks the guest to shut down, the runtime's own decision (idle timeout,
    /// maximum lifetime); kills it if it has not within [`SELF_STOP_GRACE`].
    async fn stop_by_itself(
        &self,
        vm: &mut Vm,
        agent_open: bool,
        stop_deadline: &mut Option<Instant>,
    ) {
        self.record.stopping();
        if agent_open {
            let _ = vm
                .agent
                .send(Envelope::new(NO_REQUEST, HostMessage::Shutdown))
                .await;
        }
        *stop_deadline = Some(Instant::now() + SELF_STOP_GRACE);
    }
}

/// Listens on the control socket: its directory is the engine's (mode 0700);
/// the socket itself is made owner-only too. A stale socket of a runtime that
/// died is replaced (this runtime holds the sandbox's name lock).
fn bind_control_socket(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Whether the peer runs as this runtime's user. The socket's directory and
/// mode already keep other users out; this holds even if they were changed.
fn same_user(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .map(|cred| cred.uid() == uid)
        .unwrap_or(false)
}

async fn next_kill(
    kills: &mut Option<tokio::sync::mpsc::Receiver<SecretKill>>,
) -> Option<SecretKill> {
    match kills {
        Some(kills) => kills.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn socket_pair() -> std::io::Result<(UnixStream, StdUnixStream)> {
    let (host, guest) = StdUnixStream::pair()?;
    host.set_nonblocking(true)?;
    Ok((UnixStream::from_std(host)?, guest))
}
