//! Decides whether `/dev/kvm` runs guest code at native speed.
//!
//! A `/dev/kvm` that opens is not enough: on PVM hosts (pagetable-based KVM nested without
//! hardware support) guest ring-0 code is emulated at a few million instructions per second and
//! some instructions are not emulated at all, so a real guest kernel crawls and then dies. The
//! only reliable test is to run guest code and time it.
//!
//! Contract:
//! - [`probe`] creates a throwaway VM (16 KiB of guest memory, one vCPU in real mode), runs a
//!   counted loop of about a million `dec`/`jnz` iterations and reports a [`KvmVerdict`]:
//!   [`KvmVerdict::Native`] only when the loop finished with the expected registers within
//!   `NATIVE_CPU_LIMIT` (50 ms) of vCPU-thread CPU time. A loop past that limit is stopped
//!   and judged [`KvmVerdict::Slow`] without running to the end: the answer is settled.
//!   Callers use `-accel kvm` for `Native` and fall back to TCG for anything else.
//! - It never panics: every failure is a verdict with the reason in [`KvmProbe::detail`].
//! - Cost: about a millisecond on native KVM; on emulated KVM it stops as soon as the loop has
//!   used 50 ms of CPU (under 100 ms wall). The caller blocks at most `HARD_TIMEOUT` (2 s),
//!   even if `KVM_RUN` never returns.
//! - Threads: the VM lives entirely on one short-lived helper thread that owns and drops it; the
//!   caller only waits on a channel. No signal handler is installed (this code runs inside a
//!   Node addon whose signals belong to Node), so the run is bounded by the guest itself: it
//!   leaves to the host with an `out` after every chunk of the loop, and the host decides at
//!   each such checkpoint whether to go on. Should one `KVM_RUN` hang, the caller stops waiting
//!   after `HARD_TIMEOUT` and the detached helper exits at its next checkpoint.
//! - [`probe_cached`] runs the probe once per process and keeps the result.
//!
//! All `unsafe` of the probe is in this module.

use std::fmt::Write as _;
use std::ptr::NonNull;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use std::{io, thread};

use kvm_bindings::{kvm_userspace_memory_region, KVM_API_VERSION, KVM_EXIT_INTERNAL_ERROR};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

/// What the probe concluded about `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmVerdict {
    /// Guest code runs at hardware speed: use `-accel kvm`.
    Native,
    /// Guest code runs correctly as far as it got (every checkpoint right) but far slower than
    /// hardware: an emulating KVM, or a host too busy to tell.
    Slow,
    /// `/dev/kvm` is missing, refused, or could not run the test guest correctly.
    Unavailable,
}

/// The outcome of one probe run.
#[derive(Debug, Clone)]
pub struct KvmProbe {
    pub verdict: KvmVerdict,
    /// Human-readable reason for the verdict (the failing step, or the measured speed).
    pub detail: String,
    /// Wall time the whole probe cost its caller.
    pub elapsed: Duration,
}

/// Runs the probe now, without caching.
pub fn probe() -> KvmProbe {
    probe_with(Limits::DEFAULT)
}

/// Runs the probe on first call and returns the same result for the rest of the process.
pub fn probe_cached() -> &'static KvmProbe {
    static RESULT: OnceLock<KvmProbe> = OnceLock::new();
    RESULT.get_or_init(probe)
}

/// vCPU CPU time above which the loop is not running on hardware. Native execution of the loop
/// takes about 1 ms (a million one-cycle iterations plus a few dozen exits, which even nested
/// VMX keeps under ~10 ms); an emulating KVM at ~2.4 M instructions/s needs ~0.9 s. 50 ms sits
/// far from both, with room for first-run page faults. CPU time rather than wall time, so that
/// a busy host does not turn native KVM into a false `Slow`.
const NATIVE_CPU_LIMIT: Duration = Duration::from_millis(50);

/// Wall time after which the host stops resuming the vCPU even if it has used little CPU (the
/// probe thread is starved, or the KVM sleeps inside `KVM_RUN`).
const WALL_BUDGET: Duration = Duration::from_secs(1);

/// How long the caller waits for the probe thread at most, covering a `KVM_RUN` that never
/// returns to a checkpoint.
const HARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Loop chunks; the guest exits to the host after each. 32 keeps the exits' cost negligible on
/// hardware while an emulated chunk (~25 ms here) is short enough to stop the probe promptly.
const CHUNKS: u32 = 32;
const CHUNK_ITERATIONS: u32 = 32_768;
/// Iterations of the whole loop when it runs to the end.
const TOTAL_ITERATIONS: u32 = CHUNKS * CHUNK_ITERATIONS;

/// Port the guest writes to at each checkpoint. Without an in-kernel irqchip or PIT every port
/// access exits to the host, so the number only has to match.
const CHECKPOINT_PORT: u16 = 0x80;
/// Value the guest leaves in `eax` before `hlt`, proving it ran past the loop.
const RESULT_MAGIC: u32 = 0x4b56_4d21;

const GUEST_MEMORY_SIZE: usize = 0x4000;
/// Guest-physical address of the program (inside the memory slot at 0).
const CODE_ADDR: u64 = 0x1000;

/// The real-mode test program; the `0x66` prefixes make the operands 32-bit.
fn guest_program() -> Vec<u8> {
    let mut code = Vec::with_capacity(0x21);
    // 0x00: mov dx, CHECKPOINT_PORT
    code.push(0xba);
    code.extend_from_slice(&CHECKPOINT_PORT.to_le_bytes());
    // 0x03: mov ebx, CHUNKS
    code.extend_from_slice(&[0x66, 0xbb]);
    code.extend_from_slice(&CHUNKS.to_le_bytes());
    // 0x09 outer: mov ecx, CHUNK_ITERATIONS
    code.extend_from_slice(&[0x66, 0xb9]);
    code.extend_from_slice(&CHUNK_ITERATIONS.to_le_bytes());
    // 0x0f inner: dec ecx; jnz inner (0x13 - 4)
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xfc]);
    // 0x13: mov al, bl; out dx, al (checkpoint: reports the chunks left)
    code.extend_from_slice(&[0x88, 0xd8, 0xee]);
    // 0x16: dec ebx; jnz outer (0x1a - 0x11)
    code.extend_from_slice(&[0x66, 0x4b, 0x75, 0xef]);
    // 0x1a: mov eax, RESULT_MAGIC
    code.extend_from_slice(&[0x66, 0xb8]);
    code.extend_from_slice(&RESULT_MAGIC.to_le_bytes());
    // 0x20: hlt
    code.push(0xf4);
    code
}

/// Guest address just past the `hlt`, where `rip` stands once the vCPU has halted.
fn halt_rip() -> u64 {
    CODE_ADDR + guest_program().len() as u64
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    native_cpu: Duration,
    wall_budget: Duration,
    hard_timeout: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        native_cpu: NATIVE_CPU_LIMIT,
        wall_budget: WALL_BUDGET,
        hard_timeout: HARD_TIMEOUT,
    };
}

/// Why the probe could not run the guest as intended.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0}, expected {KVM_API_VERSION}")]
    ApiVersion(i32),
    #[error("cannot create a VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot map guest memory")]
    Mmap(#[source] io::Error),
    #[error("cannot register guest memory")]
    SetMemory(#[source] kvm_ioctls::Error),
    #[error("cannot set up the vCPU ({step})")]
    Vcpu {
        step: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_RUN failed")]
    Run(#[source] kvm_ioctls::Error),
    #[error("vCPU exited with {0} instead of halting")]
    UnexpectedExit(String),
    #[error("checkpoint {index} reported {got}, expected {expected}")]
    WrongCheckpoint { index: u32, got: u8, expected: u8 },
    #[error("guest halted with wrong state: {0}")]
    WrongResult(String),
    #[error("cannot read the thread CPU clock")]
    Clock(#[source] io::Error),
    #[error("cannot start the probe thread")]
    Thread(#[source] io::Error),
    #[error("probe thread died")]
    ThreadDied,
}

/// How far the guest got.
#[derive(Debug)]
struct Run {
    iterations: u32,
    halted: bool,
    cpu: Duration,
    wall: Duration,
}

fn probe_with(limits: Limits) -> KvmProbe {
    let start = Instant::now();
    let (verdict, detail) = match run_on_thread(limits) {
        Ok(Some(run)) => judge(&run, limits),
        Ok(None) => (
            KvmVerdict::Slow,
            format!(
                "vCPU did not reach a checkpoint within {} ms",
                limits.hard_timeout.as_millis()
            ),
        ),
        Err(err) => (KvmVerdict::Unavailable, error_chain(&err)),
    };
    KvmProbe {
        verdict,
        detail,
        elapsed: start.elapsed(),
    }
}

fn judge(run: &Run, limits: Limits) -> (KvmVerdict, String) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = f64::from(run.iterations) / run.cpu.as_secs_f64().max(1e-9) / 1e6;
    let measured = format!(
        "{} of {TOTAL_ITERATIONS} loop iterations in {:.1} ms vCPU time \
         ({:.1} ms wall, {rate:.1} M iterations/s)",
        run.iterations,
        ms(run.cpu),
        ms(run.wall),
    );
    if run.halted && run.cpu <= limits.native_cpu {
        (KvmVerdict::Native, format!("native: {measured}"))
    } else if run.cpu > limits.native_cpu {
        let limit = ms(limits.native_cpu);
        (
            KvmVerdict::Slow,
            format!("emulated or slow: {measured}; native needs under {limit:.0} ms"),
        )
    } else {
        (
            KvmVerdict::Slow,
            format!("host too busy to judge: {measured}; stopped at the wall-time budget"),
        )
    }
}

/// Runs the guest on a helper thread and waits at most `limits.hard_timeout` for it.
/// `Ok(None)` means the thread did not answer in time; it is left to finish on its own.
fn run_on_thread(limits: Limits) -> Result<Option<Run>, ProbeError> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            // The receiver is gone if the caller timed out; nobody needs the result then.
            let _ = tx.send(run_guest(limits));
        })
        .map_err(ProbeError::Thread)?;
    match rx.recv_timeout(limits.hard_timeout) {
        Ok(result) => result.map(Some),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ProbeError::ThreadDied),
    }
}

/// Builds the VM and runs the program until it halts or a limit is passed.
fn run_guest(limits: Limits) -> Result<Run, ProbeError> {
    let kvm = Kvm::new().map_err(ProbeError::Open)?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        return Err(ProbeError::ApiVersion(version));
    }

    // Declared before the VM so that it is dropped after it: KVM keeps the host address until
    // the VM fd closes.
    let mut memory = GuestMemory::new(GUEST_MEMORY_SIZE).map_err(ProbeError::Mmap)?;
    memory.write(CODE_ADDR as usize, &guest_program());

    let vm = kvm.create_vm().map_err(ProbeError::CreateVm)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: memory.len() as u64,
        userspace_addr: memory.host_addr(),
        flags: 0,
    };
    // SAFETY: the region describes exactly the live mapping owned by `memory`, which is dropped
    // only after `vm` (reverse declaration order), so KVM never sees a dangling host address.
    unsafe { vm.set_user_memory_region(region) }.map_err(ProbeError::SetMemory)?;

    let mut vcpu = vm.create_vcpu(0).map_err(|source| ProbeError::Vcpu {
        step: "create",
        source,
    })?;
    enter_real_mode(&vcpu)?;

    let wall_start = Instant::now();
    let cpu_start = thread_cpu_time()?;
    let mut chunks_done = 0u32;
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => Exit::from(exit),
            // A signal meant for another part of the process; just re-enter.
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {
                Exit::Interrupted
            }
            Err(err) => return Err(ProbeError::Run(err)),
        };
        match exit {
            Exit::Halt => break,
            Exit::Checkpoint(got) => {
                let expected = (CHUNKS - chunks_done) as u8;
                if got != expected {
                    return Err(ProbeError::WrongCheckpoint {
                        index: chunks_done,
                        got,
                        expected,
                    });
                }
                chunks_done += 1;
            }
            Exit::Interrupted => {}
            Exit::InternalError => {
                return Err(ProbeError::UnexpectedExit(internal_error(&mut vcpu)));
            }
            Exit::Other(what) => return Err(ProbeError::UnexpectedExit(what)),
        }
        let cpu = thread_cpu_time()?.saturating_sub(cpu_start);
        let wall = wall_start.elapsed();
        if cpu > limits.native_cpu || wall > limits.wall_budget {
            return Ok(Run {
                iterations: chunks_done * CHUNK_ITERATIONS,
                halted: false,
                cpu,
                wall,
            });
        }
    }
    let cpu = thread_cpu_time()?.saturating_sub(cpu_start);
    let wall = wall_start.elapsed();
    check_result(&vcpu, chunks_done)?;
    Ok(Run {
        iterations: TOTAL_ITERATIONS,
        halted: true,
        cpu,
        wall,
    })
}

/// Real mode with `cs` based at 0, so `rip` is the guest-physical address of the program.
fn enter_real_mode(vcpu: &VcpuFd) -> Result<(), ProbeError> {
    let step = |step| move |source| ProbeError::Vcpu { step, source };
    let mut sregs = vcpu.get_sregs().map_err(step("get sregs"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(step("set sregs"))?;
    let mut regs = vcpu.get_regs().map_err(step("get regs"))?;
    regs.rip = CODE_ADDR;
    // Bit 1 of rflags is reserved and must be set; interrupts stay off.
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(step("set regs"))
}

fn check_result(vcpu: &VcpuFd, chunks_done: u32) -> Result<(), ProbeError> {
    let regs = vcpu.get_regs().map_err(|source| ProbeError::Vcpu {
        step: "get regs",
        source,
    })?;
    let ok = chunks_done == CHUNKS
        && regs.rax as u32 == RESULT_MAGIC
        && regs.rcx as u32 == 0
        && regs.rbx as u32 == 0
        && regs.rip == halt_rip();
    if ok {
        return Ok(());
    }
    let mut state = format!(
        "{chunks_done} checkpoints, rax={:#x} rbx={:#x} rcx={:#x} rip={:#x}",
        regs.rax, regs.rbx, regs.rcx, regs.rip
    );
    let _ = write!(
        state,
        " (expected {CHUNKS}, {RESULT_MAGIC:#x}, 0, 0, {:#x})",
        halt_rip()
    );
    Err(ProbeError::WrongResult(state))
}

/// A vCPU exit reduced to what the probe needs, so that the borrow of the vCPU ends.
enum Exit {
    Halt,
    Checkpoint(u8),
    Interrupted,
    InternalError,
    Other(String),
}

impl From<VcpuExit<'_>> for Exit {
    fn from(exit: VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::Hlt => Exit::Halt,
            VcpuExit::IoOut(CHECKPOINT_PORT, &[value]) => Exit::Checkpoint(value),
            VcpuExit::Intr => Exit::Interrupted,
            VcpuExit::InternalError => Exit::InternalError,
            other => Exit::Other(format!("{other:?}")),
        }
    }
}

/// Describes a `KVM_EXIT_INTERNAL_ERROR`, e.g. an instruction the KVM cannot emulate.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
        return "an internal error".to_owned();
    }
    // SAFETY: `exit_reason` is KVM_EXIT_INTERNAL_ERROR, for which the kernel fills the
    // `internal` member of the union; it is plain integers, valid for any bit pattern.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let reason = match internal.suberror {
        1 => " (instruction emulation failed)",
        2 => " (simultaneous exceptions)",
        3 => " (delivery event failed)",
        _ => "",
    };
    format!(
        "KVM_EXIT_INTERNAL_ERROR suberror {}{reason}",
        internal.suberror
    )
}

fn thread_cpu_time() -> Result<Duration, ProbeError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return Err(ProbeError::Clock(io::Error::last_os_error()));
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// `err` followed by each of its sources, separated by ": ".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Anonymous private memory backing the guest, unmapped on drop.
struct GuestMemory {
    ptr: NonNull<u8>,
    len: usize,
}

impl GuestMemory {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; it aliases nothing.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(GuestMemory { ptr, len })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Copies `bytes` to `offset`. Callers pass constants that fit; anything else is clipped
    /// rather than written out of bounds.
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let room = self.len.saturating_sub(offset);
        let count = bytes.len().min(room);
        // SAFETY: `offset + count <= len`, so the destination lies inside our mapping, which is
        // writable and does not overlap `bytes` (a Rust slice, never guest memory).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(offset), count);
        }
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the host CPU advertises hardware virtualisation. Without it a
    /// /dev/kvm can only be an emulating one (this project's PVM build machines).
    fn host_has_hardware_virtualisation() -> bool {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    }

    #[test]
    fn refuses_kvm_without_hardware_virtualisation() {
        let result = probe();
        eprintln!(
            "kvm probe: {:?} in {:?}: {}",
            result.verdict, result.elapsed, result.detail
        );
        if !host_has_hardware_virtualisation() {
            // Calling an emulating KVM native would send real guests to their death.
            assert_ne!(result.verdict, KvmVerdict::Native, "{}", result.detail);
        }
        assert!(
            result.elapsed < Duration::from_secs(3),
            "{:?}",
            result.elapsed
        );
    }

    #[test]
    fn cached_probe_is_stable() {
        let first = probe_cached().verdict;
        let second = probe_cached().verdict;
        eprintln!("cached kvm probe: {:?}", probe_cached());
        assert_eq!(first, second);
        assert!(std::ptr::eq(probe_cached(), probe_cached()));
    }

    /// With limits loose enough for emulation, the program must run to `hlt` with the expected
    /// registers: this checks the hand-assembled guest code on any KVM, native or not.
    #[test]
    fn guest_program_halts_with_expected_state() {
        let loose = Limits {
            native_cpu: Duration::from_secs(10),
            wall_budget: Duration::from_secs(10),
            hard_timeout: Duration::from_secs(10),
        };
        match run_on_thread(loose) {
            // A machine without a usable /dev/kvm is a supported host (QEMU then
            // emulates); what must hold there is that the probe says so.
            Err(ProbeError::Open(err)) => {
                let result = probe();
                eprintln!("no usable /dev/kvm ({err}); probe: {result:?}");
                assert_eq!(result.verdict, KvmVerdict::Unavailable, "{}", result.detail);
                assert!(
                    result.detail.starts_with("cannot open /dev/kvm"),
                    "{}",
                    result.detail
                );
            }
            Err(err) => panic!("{}", error_chain(&err)),
            Ok(None) => panic!("probe thread did not answer"),
            Ok(Some(run)) => {
                eprintln!("full run: {run:?}");
                assert!(run.halted, "{run:?}");
                assert_eq!(run.iterations, TOTAL_ITERATIONS);
            }
        }
    }

    #[test]
    fn program_layout_matches_jump_offsets() {
        let code = guest_program();
        assert_eq!(code.len(), 0x21);
        // jnz inner: rel8 from the end of the jump (0x13) back to 0x0f.
        assert_eq!(&code[0x0f..0x13], &[0x66, 0x49, 0x75, 0xfc]);
        // jnz outer: rel8 from 0x1a back to 0x09.
        assert_eq!(&code[0x16..0x1a], &[0x66, 0x4b, 0x75, 0xef]);
        assert_eq!(code[0x20], 0xf4);
    }

    #[test]
    fn judge_separates_native_from_slow() {
        let run = |halted, cpu_ms, wall_ms| Run {
            iterations: if halted { TOTAL_ITERATIONS } else { 65_536 },
            halted,
            cpu: Duration::from_millis(cpu_ms),
            wall: Duration::from_millis(wall_ms),
        };
        let limits = Limits::DEFAULT;
        assert_eq!(judge(&run(true, 1, 1), limits).0, KvmVerdict::Native);
        assert_eq!(judge(&run(true, 60, 60), limits).0, KvmVerdict::Slow);
        assert_eq!(judge(&run(false, 52, 53), limits).0, KvmVerdict::Slow);
        assert_eq!(judge(&run(false, 3, 1001), limits).0, KvmVerdict::Slow);
    }
}
