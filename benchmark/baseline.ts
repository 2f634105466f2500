// Raw QEMU baselines for the benchmarks, launched by the benchmark itself and
// never through the SDK: the SDK has no switch that changes what it boots.
//
// A baseline VM is the machine the engine builds (crates/vmm/src/qemu.rs:
// microvm without ACPI, the same kernel arguments, the accelerator the SDK's
// own sandbox reported) booting the engine's initramfs for the agent with a
// second cpio archive appended (the kernel unpacks concatenated archives in
// order). That archive holds a static busybox, and the kernel's `rdinit=`
// starts it instead of the agent, so the agent has no benchmark-only paths.
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

import type { Sandbox } from "../ts/index";

/** Kernel arguments every guest gets (`BASE_KERNEL_ARGS` in crates/vmm/src/qemu.rs). */
export const BASE_KERNEL_ARGS = "console=ttyS0 reboot=t panic=-1 quiet mitigations=off";

/** The accelerator a sandbox runs on, as the SDK reports it: "kvm" or "tcg". */
export function accelOf(sandbox: Sandbox): "kvm" | "tcg" {
  const accel = sandbox.bootInfo.accel;
  if (accel !== "kvm" && accel !== "tcg") throw new Error(`unknown accelerator ${JSON.stringify(accel)}`);
  return accel;
}

/** Records one accelerator for a run and refuses a run whose sandboxes disagree. */
export class AccelRecord {
  #accel: "kvm" | "tcg" | undefined;

  note(sandbox: Sandbox): "kvm" | "tcg" {
    const accel = accelOf(sandbox);
    if (this.#accel !== undefined && this.#accel !== accel) {
      throw new Error(`the SDK booted on ${this.#accel} and then on ${accel} in one run`);
    }
    this.#accel = accel;
    return accel;
  }

  get value(): "kvm" | "tcg" {
    if (this.#accel === undefined) throw new Error("no sandbox has reported its accelerator yet");
    return this.#accel;
  }
}

/** The initramfs the engine wrote for the agent into `home`'s cache (after one sandbox booted). */
export function engineInitramfs(home: string): string {
  const dir = path.join(home, "cache", "initramfs");
  const found = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".cpio")) : [];
  if (found.length !== 1) throw new Error(`expected one initramfs in ${dir}, found ${found.length}`);
  return path.join(dir, found[0]);
}

/** The static busybox of the test root that scripts/rootfs-busybox.sh builds. */
export function staticBusybox(repoRoot: string): string {
  const root = execFileSync(path.join(repoRoot, "scripts", "rootfs-busybox.sh"), { encoding: "utf8" }).trim();
  return path.join(root, "bin", "busybox");
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
}

/** A newc ("070701") cpio archive of `entries`, with its trailer. */
function newc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let ino = 1000;
  for (const entry of [...entries, { name: "TRAILER!!!", mode: 0 }]) {
    const data = entry.data ?? Buffer.alloc(0);
    const name = Buffer.from(entry.name + "\0");
    const fields = [ino++, entry.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    const header = Buffer.from("070701" + fields.map(hex).join(""), "ascii");
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const EXECUTABLE = 0o100755;

/**
 * Writes `out`: the engine's initramfs followed by an archive holding the
 * executable `files` under `/bench/` (start one with `rdinit=/bench/NAME`).
 */
export function baselineInitramfs(engineCpio: string, files: Record<string, string | Buffer>, out: string): string {
  const entries: CpioEntry[] = [
    { name: "bench", mode: DIR },
    ...Object.entries(files).map(([name, content]) => ({
      name: `bench/${name}`,
      mode: EXECUTABLE,
      data: Buffer.isBuffer(content) ? content : Buffer.from(content),
    })),
  ];
  const engine = fs.readFileSync(engineCpio);
  // The kernel skips zeros between archives; the next one must start 4-aligned.
  const gap = Buffer.alloc((4 - (engine.length % 4)) % 4);
  fs.writeFileSync(out, Buffer.concat([engine, gap, newc(entries)]));
  return out;
}

/**
 * A static x86-64 ELF executable that reboots the machine the moment it runs:
 * `reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART)`,
 * what the agent calls to power off. With `reboot=t` and QEMU's `-no-reboot`
 * that ends the VM; as PID 1 it is "an init that powers off at once".
 */
export function rebootInit(): Buffer {
  const base = 0x400000;
  const code = Buffer.from([
    0xbf, 0xad, 0xde, 0xe1, 0xfe, // mov edi, 0xfee1dead   (LINUX_REBOOT_MAGIC1)
    0xbe, 0x69, 0x19, 0x12, 0x28, // mov esi, 0x28121969   (LINUX_REBOOT_MAGIC2)
    0xba, 0x67, 0x45, 0x23, 0x01, // mov edx, 0x01234567   (LINUX_REBOOT_CMD_RESTART)
    0xb8, 0xa9, 0x00, 0x00, 0x00, // mov eax, 169          (SYS_reboot)
    0x0f, 0x05, //                   syscall
    0xeb, 0xfe, //                   jmp . (not reached)
  ]);
  const ehdr = Buffer.alloc(64);
  const phdr = Buffer.alloc(56);
  const size = ehdr.length + phdr.length + code.length;
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(ehdr, 0); // ELF, 64-bit, little-endian, v1, SysV
  ehdr.writeUInt16LE(2, 16); // ET_EXEC
  ehdr.writeUInt16LE(0x3e, 18); // EM_X86_64
  ehdr.writeUInt32LE(1, 20); // EV_CURRENT
  ehdr.writeBigUInt64LE(BigInt(base + ehdr.length + phdr.length), 24); // e_entry: the code
  ehdr.writeBigUInt64LE(BigInt(ehdr.length), 32); // e_phoff
  ehdr.writeUInt16LE(ehdr.length, 52); // e_ehsize
  ehdr.writeUInt16LE(phdr.length, 54); // e_phentsize
  ehdr.writeUInt16LE(1, 56); // e_phnum
  phdr.writeUInt32LE(1, 0); // PT_LOAD
  phdr.writeUInt32LE(5, 4); // PF_R | PF_X
  phdr.writeBigUInt64LE(0n, 8); // p_offset: the whole file
  phdr.writeBigUInt64LE(BigInt(base), 16); // p_vaddr
  phdr.writeBigUInt64LE(BigInt(base), 24); // p_paddr
  phdr.writeBigUInt64LE(BigInt(size), 32); // p_filesz
  phdr.writeBigUInt64LE(BigInt(size), 40); // p_memsz
  phdr.writeBigUInt64LE(0x1000n, 48); // p_align
  return Buffer.concat([ehdr, phdr, code]);
}

export interface RawVm {
  kernel: string;
  initramfs: string;
  accel: "kvm" | "tcg";
  cpus: number;
  memoryMib: number;
  /** Kernel arguments after the base ones (`rdinit=...`, `-- args for init`). */
  append: string;
  /** More QEMU arguments (devices). */
  extra?: string[];
  /** Where the guest's serial console goes; discarded when not given. */
  consoleLog?: string;
  /** Kills the VM after this long. */
  timeoutMs?: number;
}

/** The engine's QEMU command line for `vm`, without the agent's channel and the host-stack network. */
export function rawQemuArgs(vm: RawVm): string[] {
  return [
    "-M", "microvm,acpi=off,x-option-roms=off",
    "-accel", vm.accel,
    "-cpu", vm.accel === "kvm" ? "host" : "max",
    "-smp", String(vm.cpus), "-m", `${vm.memoryMib}M`,
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    "-kernel", vm.kernel, "-initrd", vm.initramfs,
    "-append", `${BASE_KERNEL_ARGS} ${vm.append}`,
    "-serial", vm.consoleLog ? `file:${vm.consoleLog}` : "null",
    "-device", "virtio-rng-device",
    ...(vm.extra ?? []),
  ];
}

/** Runs a raw QEMU VM to its exit; resolves with the wall time from spawn to exit in ms. */
export function runRawQemu(vm: RawVm): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const qemu = spawn("qemu-system-x86_64", rawQemuArgs(vm), { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    qemu.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = vm.timeoutMs ? setTimeout(() => qemu.kill("SIGKILL"), vm.timeoutMs) : undefined;
    qemu.on("error", reject);
    qemu.on("exit", (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code !== 0) reject(new Error(`raw QEMU exited with ${code ?? signal}: ${stderr.trim()}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e6);
    });
  });
}
