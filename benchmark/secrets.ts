// Secrets benchmark: what TLS interception costs a guest's HTTPS requests.
// Two sandboxes talk HTTPS to one server on the host's 127.0.0.1 (through the
// gateway address, named `api.bench.test` by `network.hosts`, with a test CA
// made here by the openssl CLI):
//  - "intercepted": a secret for api.bench.test, so every connection to it is
//    terminated by the runtime with the sandbox's CA, rewritten (the
//    placeholder in the Authorization header becomes the value) and
//    re-originated to the server (which the runtime trusts through
//    `network.tls.caCertificates`);
//  - "relayed": no secrets, so the stack relays the same TLS byte for byte.
// In each guest, Python measures with the guest's clock:
//  - new connection + TLS handshake + one GET, 100 times (median ms);
//  - 200 GETs on one kept-alive connection (requests/s);
//  - one 32 MiB POST body (MB/s).
// Results go to benchmark/RESULTS.md.
//   node dist/benchmark/secrets.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as https from "node:https";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox } from "../ts/index";
import { AccelRecord } from "./baseline";
import { accelLine, appendResults, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? "1");
const HOST = "api.bench.test";
const BODY = 32 << 20;

interface Sample {
  connect_ms: number;
  keepalive_rps: number;
  upload: number;
}

function certificates(dir: string): { key: string; cert: string; ca: string } {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
    "-out", "ca.pem", "-days", "2", "-subj", "/CN=msb bench CA");
  fs.writeFileSync(path.join(dir, "leaf.ext"), `subjectAltName=DNS:${HOST}\nbasicConstraints=CA:FALSE\n`);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
    "-out", "leaf.csr", "-subj", `/CN=${HOST}`);
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext");
  const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
  return { key: read("leaf.key"), cert: read("leaf.pem"), ca: read("ca.pem") };
}

const GUEST = `
import http.client, json, os, ssl, sys, time
port = int(sys.argv[1]); body_len = int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.load_verify_locations("/tmp/bench-ca.pem")
auth = {"Authorization": "Bearer " + os.environ.get("BENCH_KEY", "none")}
setups = []
for _ in range(100):
    t = time.perf_counter()
    c = http.client.HTTPSConnection("${HOST}", port, context=ctx, timeout=60)
    c.request("GET", "/x", headers=auth)
    c.getresponse().read()
    setups.append((time.perf_counter() - t) * 1000)
    c.close()
setups.sort()
c = http.client.HTTPSConnection("${HOST}", port, context=ctx, timeout=60)
t = time.perf_counter()
for _ in range(200):
    c.request("GET", "/x", headers=auth)
    c.getresponse().read()
rps = 200 / (time.perf_counter() - t)
body = b"x" * body_len
t = time.perf_counter()
c.request("POST", "/upload", body=body, headers=auth)
c.getresponse().read()
upload = body_len / (time.perf_counter() - t) / 1e6
print(json.dumps({"connect_ms": setups[len(setups) // 2], "keepalive_rps": rps, "upload": upload}))
`;

const accel = new AccelRecord();

async function measure(image: string, port: number, ca: string, intercepted: boolean): Promise<Sample> {
  const sb = await Sandbox.create({
    image,
    cpus: 1,
    memoryMib: 1024,
    secretEnv: intercepted ? { BENCH_KEY: { value: "bench-secret-value", domain: HOST } } : undefined,
    network: {
      rules: [{ action: "allow", cidr: "127.0.0.1", ports: port }],
      hosts: { [HOST]: "100.96.0.1" },
      tls: { caCertificates: [ca] },
    },
  });
  try {
    accel.note(sb);
    await sb.fs().write("/tmp/bench-ca.pem", ca);
    const out = await sb.exec("python3", ["-c", GUEST, String(port), String(BODY)], { timeout: 600_000 });
    if (out.code !== 0) throw new Error(`guest measurement failed: ${out.stderr()}`);
    return JSON.parse(out.stdout()) as Sample;
  } finally {
    await sb.stopAndWait();
  }
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-secrets-"));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-secrets-work-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-debian-python.sh"), { encoding: "utf8" }).trim();
  const { key, cert, ca } = certificates(work);
  let authorizations = new Set<string>();
  const server = https.createServer({ key, cert }, (req, res) => {
    authorizations.add(req.headers.authorization ?? "");
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const intercepted: Sample[] = [];
  const relayed: Sample[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      authorizations = new Set();
      intercepted.push(await measure(image, port, ca, true));
      if ([...authorizations].join() !== "Bearer bench-secret-value") {
        throw new Error(`the server did not get the substituted value: ${[...authorizations].join()}`);
      }
      relayed.push(await measure(image, port, ca, false));
    }
  } finally {
    server.close();
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
  type Measure = keyof Sample;
  const col = (xs: Sample[], k: Measure) => median(xs.map((x) => x[k]));
  const all = (xs: Sample[], k: Measure) => xs.map((x) => x[k].toFixed(1)).join(", ");
  const row = (label: string, k: Measure, unit: string, higherIsBetter: boolean) => {
    const a = col(intercepted, k);
    const b = col(relayed, k);
    const ratio = higherIsBetter ? a / b : b / a;
    return `| ${label} | ${a.toFixed(1)} ${unit} (${all(intercepted, k)}) | ${b.toFixed(1)} ${unit} (${all(relayed, k)}) | ${ratio.toFixed(2)} |`;
  };
  const lines = [
    `Guest: Debian + python3 (http.client, ssl), 1 vCPU, 1024 MiB; measured by the guest's clock; an HTTPS server (node https, ECDSA P-256 leaf) on the host's 127.0.0.1, reached through the gateway address as ${HOST}. Intercepted: a secret for ${HOST} (TLS terminated and re-originated by the runtime, header rewritten); relayed: no secrets (TLS passed through unchanged). Rounds: ${rounds}, alternating.`,
    "",
    "| measure | intercepted (median, rounds) | relayed (median, rounds) | intercepted vs. relayed |",
    "|---|---|---|---|",
    row("new connection + handshake + GET (lower is better; ratio relayed/intercepted)", "connect_ms", "ms", false),
    row("GETs on one kept-alive connection", "keepalive_rps", "req/s", true),
    row(`${BODY >> 20} MiB POST body`, "upload", "MB/s", true),
  ];
  appendResults("Secrets: TLS interception vs relayed TLS", `node dist/benchmark/secrets.js ${rounds}`, accelLine(accel.value, "both sandboxes ran on the same"), lines);
  console.log(lines.join("\n"));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
