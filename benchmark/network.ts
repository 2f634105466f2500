// Network benchmark: our host-side stack against QEMU's own user-mode network
// (slirp, `-netdev user`), same kernel, same guest, same run. For each, a guest
// (Debian + python3) measures with its own clock:
//  - bulk TCP guest -> host: 256 MiB into a sink on the host's 127.0.0.1;
//  - bulk TCP host -> guest: 256 MiB from a source on the host's 127.0.0.1;
//  - connection setup: connect, receive one byte, close; 200 times.
// Rounds alternate between the two networks. Results go to benchmark/RESULTS.md.
//   node dist/benchmark/network.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox } from "../ts/index";
import { appendResults, median } from "./report";

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
print(json.dumps({"up": BULK / up / 1e6, "down": BULK / down / 1e6, "connect_ms": lat[100] * 1000}))`;
}

interface Sample {
  up: number;
  down: number;
  connect_ms: number;
}

async function measure(image: string, mode: "ours" | "qemu-user", s: Servers): Promise<Sample> {
  if (mode === "qemu-user") process.env.MSB_NET_BASELINE = "qemu-user";
  else delete process.env.MSB_NET_BASELINE;
  const host = mode === "ours" ? "100.96.0.1" : "10.0.2.2";
  const sb = await Sandbox.create({
    image,
    memoryMib: 1024,
    network: {
      rules: [s.sink, s.source, s.tick].map((port) => ({ action: "allow" as const, cidr: "127.0.0.1", ports: port })),
    },
  });
  try {
    const out = await sb.exec("python3", ["-c", guestScript(host, s)], { timeout: 600_000 });
    if (!out.success) throw new Error(`${mode}: ${out.stderr()}`);
    return JSON.parse(out.stdout()) as Sample;
  } finally {
    await sb.stopAndWait();
    delete process.env.MSB_NET_BASELINE;
  }
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-net-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-debian-python.sh"), { encoding: "utf8" }).trim();
  const s = await servers();
  const ours: Sample[] = [];
  const slirp: Sample[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      ours.push(await measure(image, "ours", s));
      slirp.push(await measure(image, "qemu-user", s));
    }
  } finally {
    s.close();
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
  }
  const col = (xs: Sample[], key: keyof Sample) => median(xs.map((x) => x[key]));
  const all = (xs: Sample[], key: keyof Sample) => xs.map((x) => x[key].toFixed(1)).join(", ");
  const row = (label: string, key: keyof Sample, unit: string, higherIsBetter: boolean) => {
    const a = col(ours, key);
    const b = col(slirp, key);
    const ratio = higherIsBetter ? a / b : b / a;
    return `| ${label} | ${a.toFixed(1)} ${unit} (${all(ours, key)}) | ${b.toFixed(1)} ${unit} (${all(slirp, key)}) | **${ratio.toFixed(2)}** |`;
  };
  const lines = [
    `Guest: Debian 12 + python3, 1 vCPU, 1024 MiB, TCG; measured by the guest's clock; peers on the host's 127.0.0.1 (ours: through the gateway address with an allow rule per port; slirp: 10.0.2.2). ${BULK >> 20} MiB per bulk transfer, connection setup = median of 200. Rounds: ${rounds}, alternating.`,
    "",
    "| measure | our stack (median, rounds) | QEMU user networking (median, rounds) | ours vs. slirp (bar: >= 1.0) |",
    "|---|---|---|---|",
    row("TCP guest -> host", "up", "MB/s", true),
    row("TCP host -> guest", "down", "MB/s", true),
    row("connection setup (lower is better; ratio slirp/ours)", "connect_ms", "ms", false),
  ];
  appendResults("Network: our stack vs QEMU user networking", `node dist/benchmark/network.js ${rounds}`, lines);
  console.log(lines.join("\n"));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
