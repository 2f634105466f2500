// Network benchmark: our host-side stack against QEMU's own user-mode network
// (slirp, `-netdev user`), same kernel, same root, same accelerator, same run.
// Our side is a sandbox (Sandbox.create with an allow rule per port); the slirp
// side is a raw QEMU VM this benchmark launches itself (benchmark/baseline.ts):
// the engine's machine and kernel, the agent's initramfs with a busybox init
// appended that mounts the same root directory read-only over 9p, configures
// eth0 for slirp and runs the same Python measurement in that root. The SDK has
// no way to boot a sandbox without its stack. In each guest, Python measures
// with the guest's clock:
//  - bulk TCP guest -> host: 256 MiB into a sink on the host's 127.0.0.1;
//  - bulk TCP host -> guest: 256 MiB from a source on the host's 127.0.0.1;
//  - connection setup: connect, receive one byte, close; 200 times;
// and reports eth0's MTU. Rounds alternate between the two networks; the slirp
// VM runs on the accelerator the sandboxes reported. Results go to
// benchmark/RESULTS.md.
//   node dist/benchmark/network.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox } from "../ts/index";
import { AccelRecord, baselineInitramfs, engineInitramfs, runRawQemu, staticBusybox } from "./baseline";
import { accelLine, appendResults, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? "3");
const BULK = 256 << 20;

interface Servers {
  sink: number;
  source: number;
  tick: number;
  close(): void;
}

/** Sink: reads to EOF, answers the byte count. Source: writes BULK bytes. Tick: one byte, close. */
async function servers(): Promise<Servers> {
  const listen = async (onConnection: (socket: net.Socket) => void) => {
    const server = net.createServer(onConnection);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return server;
  };
  const sink = await listen((socket) => {
    let bytes = 0;
    socket.on("data", (chunk) => (bytes += chunk.length));
    socket.on("end", () => socket.end(`${bytes}\n`));
    socket.on("error", () => socket.destroy());
  });
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const source = await listen((socket) => {
    let sent = 0;
    const pump = () => {
      while (sent < BULK) {
        sent += chunk.length;
        if (!socket.write(chunk)) return void socket.once("drain", pump);
      }
      socket.end();
    };
    socket.on("error", () => socket.destroy());
    pump();
  });
  const tick = await listen((socket) => {
    socket.on("error", () => socket.destroy());
    socket.end("!");
  });
  const port = (s: net.Server) => (s.address() as net.AddressInfo).port;
  return {
    sink: port(sink),
    source: port(source),
    tick: port(tick),
    close: () => [sink, source, tick].forEach((s) => s.close()),
  };
}

/** Prints one line, `MSB-BENCH {json}`, with the guest's measurements. */
function guestScript(host: string, s: Servers): string {
  return `import socket, time, json
BULK = ${BULK}
buf = bytes(1 << 16)
t = time.perf_counter()
c = socket.create_connection(("${host}", ${s.sink}))
sent = 0
while sent < BULK:
    c.sendall(buf)
    sent += len(buf)
c.shutdown(socket.SHUT_WR)
ack = c.makefile().readline().strip()
up = time.perf_counter() - t
assert int(ack) == BULK, ack
t = time.perf_counter()
c = socket.create_connection(("${host}", ${s.source}))
got = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    got += len(d)
down = time.perf_counter() - t
assert got == BULK, got
lat = []
for i in range(200):
    t = time.perf_counter()
    c = socket.create_connection(("${host}", ${s.tick}))
    assert c.recv(1) == b"!"
    c.close()
    lat.append(time.perf_counter() - t)
lat.sort()
mtu = int(open("/sys/class/net/eth0/mtu").read())
print("MSB-BENCH " + json.dumps({"up": BULK / up / 1e6, "down": BULK / down / 1e6, "connect_ms": lat[100] * 1000, "mtu": mtu}), flush=True)`;
}

interface Sample {
  up: number;
  down: number;
  connect_ms: number;
  mtu: number;
}

function parseSample(output: string, what: string): Sample {
  const line = /^MSB-BENCH (\{.*\})\r?$/m.exec(output);
  if (!line) throw new Error(`${what}: no measurement in the guest's output:\n${output.slice(-4000)}`);
  return JSON.parse(line[1]) as Sample;
}

const accel = new AccelRecord();

async function measureOurs(image: string, s: Servers): Promise<Sample> {
  const sb = await Sandbox.create({
    image,
    cpus: 1,
    memoryMib: 1024,
    network: {
      rules: [s.sink, s.source, s.tick].map((port) => ({ action: "allow" as const, cidr: "127.0.0.1", ports: port })),
    },
  });
  try {
    accel.note(sb);
    const out = await sb.exec("python3", ["-c", guestScript("100.96.0.1", s)], { timeout: 600_000 });
    if (!out.success) throw new Error(`our stack: ${out.stderr()}`);
    return parseSample(out.stdout(), "our stack");
  } finally {
    await sb.stopAndWait();
  }
}

/**
 * PID 1 of the slirp VM: the root directory read-only over 9p with the kernel
 * filesystems and a tmpfs over it, eth0 at QEMU user networking's fixed
 * addresses (10.0.2.15/24, gateway 10.0.2.2 = the host's loopback, MTU left at
 * the driver's default), then the measurement, then reboot (which ends the VM).
 */
const SLIRP_INIT = `#!/bench/busybox sh
bb=/bench/busybox
run() {
    $bb mkdir -p /root &&
    $bb mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=524288 msbroot /root &&
    $bb mount -t proc proc /root/proc &&
    $bb mount -t sysfs sys /root/sys &&
    $bb mount -t devtmpfs dev /root/dev &&
    $bb mount -t tmpfs tmp /root/tmp &&
    $bb ifconfig lo 127.0.0.1 up &&
    $bb ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up &&
    $bb route add default gw 10.0.2.2 &&
    $bb chroot /root /usr/bin/python3 - < /bench/measure.py
}
run || echo "MSB-BENCH-FAILED $?"
# Let the serial port drain what Python printed before the VM ends.
$bb sleep 1
$bb reboot -f
`;

async function measureSlirp(image: string, s: Servers, work: string, busybox: string): Promise<Sample> {
  const initramfs = baselineInitramfs(
    engineInitramfs(process.env.MSB_HOME!),
    { busybox: fs.readFileSync(busybox), init: SLIRP_INIT, "measure.py": guestScript("10.0.2.2", s) },
    path.join(work, "baseline-slirp.cpio"),
  );
  const consoleLog = path.join(work, "slirp-console.log");
  fs.rmSync(consoleLog, { force: true });
  await runRawQemu({
    kernel: path.join(repoRoot, "assets", "vmlinux"),
    initramfs,
    accel: accel.value,
    cpus: 1,
    memoryMib: 1024,
    append: "rdinit=/bench/init",
    consoleLog,
    timeoutMs: 600_000,
    extra: [
      // The engine's root share (crates/vmm/src/qemu.rs), without the overlay the agent adds.
      "-fsdev", `local,id=root,path=${image.replace(/,/g, ",,")},security_model=none,readonly=on`,
      "-device", "virtio-9p-device,fsdev=root,mount_tag=msbroot",
      "-netdev", "user,id=net0",
      "-device", "virtio-net-device,netdev=net0,mac=02:6d:73:62:00:02",
    ],
  });
  return parseSample(fs.readFileSync(consoleLog, "utf8"), "QEMU user networking");
}

function osName(root: string): string {
  const release = fs.readFileSync(path.join(root, "etc", "os-release"), "utf8");
  return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(release)?.[1] ?? "unknown system";
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-net-"));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-net-work-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-debian-python.sh"), { encoding: "utf8" }).trim();
  const busybox = staticBusybox(repoRoot);
  const s = await servers();
  const ours: Sample[] = [];
  const slirp: Sample[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      ours.push(await measureOurs(image, s));
      slirp.push(await measureSlirp(image, s, work, busybox));
    }
  } finally {
    s.close();
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
  type Measure = "up" | "down" | "connect_ms";
  const col = (xs: Sample[], key: Measure) => median(xs.map((x) => x[key]));
  const all = (xs: Sample[], key: Measure) => xs.map((x) => x[key].toFixed(1)).join(", ");
  const row = (label: string, key: Measure, unit: string, higherIsBetter: boolean) => {
    const a = col(ours, key);
    const b = col(slirp, key);
    const ratio = higherIsBetter ? a / b : b / a;
    return `| ${label} | ${a.toFixed(1)} ${unit} (${all(ours, key)}) | ${b.toFixed(1)} ${unit} (${all(slirp, key)}) | **${ratio.toFixed(2)}** |`;
  };
  const mtus = (xs: Sample[]) => [...new Set(xs.map((x) => x.mtu))].join(", ");
  const lines = [
    `Guest: ${osName(image)} + python3, 1 vCPU, 1024 MiB; measured by the guest's clock; peers on the host's 127.0.0.1 (ours: a sandbox, through the gateway address with an allow rule per port; slirp: raw QEMU with \`-netdev user\`, same kernel and root directory, a busybox init, 10.0.2.2). Guest eth0 MTU: ours ${mtus(ours)}, slirp ${mtus(slirp)}. ${BULK >> 20} MiB per bulk transfer, connection setup = median of 200. Rounds: ${rounds}, alternating.`,
    "",
    "| measure | our stack (median, rounds) | QEMU user networking (median, rounds) | ours vs. slirp (bar: >= 1.0) |",
    "|---|---|---|---|",
    row("TCP guest -> host", "up", "MB/s", true),
    row("TCP host -> guest", "down", "MB/s", true),
    row("connection setup (lower is better; ratio slirp/ours)", "connect_ms", "ms", false),
  ];
  appendResults(
    "Network: our stack vs QEMU user networking",
    `node dist/benchmark/network.js ${rounds}`,
    accelLine(accel.value, "the slirp VM ran on the same"),
    lines,
  );
  console.log(lines.join("\n"));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
