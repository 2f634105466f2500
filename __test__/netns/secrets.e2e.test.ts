// End to end: secret environment variables (docs/secrets.md). Real VMs inside
// the test namespaces of scripts/netns-run.sh; the HTTPS servers live on the
// "public" test host (198.51.100.10) with certificates of a test CA made here
// with the openssl CLI, which the sandboxes' runtimes trust through
// `network.tls.caCertificates` (the guests never do: they only trust their
// sandbox's own CA).
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import { Sandbox, SecretViolationError, type SandboxOptions } from "../../ts/index";
import { isolatedHome, pythonRoot } from "../helpers";

const PUBLIC = "198.51.100.10";
const VALUE = "sk-real-secret-123";
const SECRET_HOST = "api.openai.test";
const OTHER_HOST = "other.test";
const UNTRUSTED_HOST = "untrusted.test";
/** Port of the server whose certificate no trusted root signed. */
const UNTRUSTED_PORT = 8443;

const home = isolatedHome("secrets");
const certs = fs.mkdtempSync(path.join(os.tmpdir(), "msb-test-secrets-certs-"));
let python: string;
let server: ChildProcess | undefined;
let caPem: string;
interface Seen {
  port: number;
  host: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}
const seen: Seen[] = [];

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: certs, stdio: ["ignore", "ignore", "pipe"] });
}

/** A test CA and a leaf for the test hosts, signed by it; and a self-signed leaf nobody trusts. */
function makeCertificates(): void {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
    "-out", "ca.pem", "-days", "2", "-subj", "/CN=msb secrets test CA");
  fs.writeFileSync(path.join(certs, "leaf.ext"),
    `subjectAltName=DNS:${SECRET_HOST},DNS:${OTHER_HOST}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key",
    "-out", "leaf.csr", "-subj", `/CN=${SECRET_HOST}`);
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext");
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "self.key",
    "-out", "self.pem", "-days", "2", "-subj", `/CN=${UNTRUSTED_HOST}`,
    "-addext", `subjectAltName=DNS:${UNTRUSTED_HOST},DNS:${SECRET_HOST}`);
  caPem = fs.readFileSync(path.join(certs, "ca.pem"), "utf8");
}

function startServer(): Promise<void> {
  const c = (f: string) => path.join(certs, f);
  server = spawn(
    "ip",
    ["netns", "exec", process.env.MSB_NETNS_PUBLIC!, process.execPath,
      path.join(__dirname, "..", "fixtures", "https-server.js"), PUBLIC,
      `443:${c("leaf.key")}:${c("leaf.pem")}`, `${UNTRUSTED_PORT}:${c("self.key")}:${c("self.pem")}`],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  return new Promise((resolve, reject) => {
    let buffer = "";
    server!.stdout!.on("data", (chunk) => {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        if (line === "ready") resolve();
        else seen.push(JSON.parse(line) as Seen);
      }
    });
    server!.on("exit", (code) => reject(new Error(`https server exited with ${code}`)));
  });
}

function options(extra: Partial<SandboxOptions> = {}, intercept?: "secrets-only" | "all"): SandboxOptions {
  return {
    image: python,
    memoryMib: 512,
    secretEnv: { OPENAI_API_KEY: { value: VALUE, domain: SECRET_HOST } },
    network: {
      hosts: { [SECRET_HOST]: PUBLIC, [OTHER_HOST]: PUBLIC, [UNTRUSTED_HOST]: PUBLIC },
      tls: { caCertificates: [caPem], intercept },
    },
    ...extra,
  };
}

/**
 * A request from the guest with Python's urllib (the Debian root has no curl):
 * `headers` values and `url` may name environment variables as `$NAME`, which
 * the guest expands. Prints "STATUS n" or "ERROR ...".
 */
const REQUEST = `
import base64, os, sys, urllib.request
def expand(s):
    return os.path.expandvars(s)
url = expand(sys.argv[1])
headers = {}
for h in sys.argv[2:]:
    k, v = h.split(":", 1)
    v = expand(v.strip())
    if v.startswith("b64:"):
        v = base64.b64encode(v[4:].encode()).decode()
    headers[k] = v
try:
    r = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20)
    print("STATUS", r.status, r.read().decode().strip())
except Exception as e:
    print("ERROR", type(e).__name__, e)
`;

async function request(sb: Sandbox, url: string, ...headers: string[]): Promise<string> {
  const out = await sb.exec("python3", ["-c", REQUEST, url, ...headers], { timeout: 60_000 });
  return out.stdout() + out.stderr();
}

function networkLog(sb: Sandbox): string {
  const file = path.join(home, "sandboxes", sb.name, "network.log");
  return fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
}

/** Every file under `dir` that contains `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile() && fs.readFileSync(p).includes(needle)) found.push(p);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

before(async () => {
  if (!process.env.MSB_NETNS_SANDBOX) {
    throw new Error("the network tests run inside test namespaces: scripts/netns-run.sh node --test dist/__test__/netns/");
  }
  python = pythonRoot();
  makeCertificates();
  await startServer();
});

after(() => {
  server?.kill();
  fs.rmSync(certs, { recursive: true, force: true });
  fs.rmSync(home, { recursive: true, force: true });
});

describe("secret environment variables", () => {
  test("the allowed host gets the value; the guest only ever sees the placeholder", async () => {
    const sb = await Sandbox.create({ ...options(), name: "secrets-main" });
    try {
      const env = await sb.exec("env");
      const line = env.stdout().split("\n").find((l) => l.startsWith("OPENAI_API_KEY="));
      assert.match(line ?? "", /^OPENAI_API_KEY=msb_secret_OPENAI_API_KEY_[0-9A-Za-z]{24}$/);
      assert.ok(!env.stdout().includes(VALUE));
      assert.match(env.stdout(), /^SSL_CERT_FILE=\/etc\/ssl\/certs\/ca-certificates\.crt$/m);

      const before = seen.length;
      const out = await request(sb, `https://${SECRET_HOST}/v1/x`, "Authorization: Bearer $OPENAI_API_KEY");
      assert.match(out, /^STATUS 200 ok$/m, out);
      assert.ok(!out.includes(VALUE), out);
      const got = seen.slice(before);
      assert.equal(got.length, 1, JSON.stringify(got));
      assert.equal(got[0].headers.authorization, `Bearer ${VALUE}`);
      assert.equal(got[0].url, "/v1/x");

      // Encoded or in a location not enabled: never substituted, never forwarded.
      const atServer = seen.length;
      const b64 = await request(sb, `https://${SECRET_HOST}/v1/x`, "X-Token: b64:$OPENAI_API_KEY");
      assert.match(b64, /^ERROR/m, b64);
      const query = await request(sb, `https://${SECRET_HOST}/v1/x?key=$OPENAI_API_KEY`);
      assert.match(query, /^ERROR/m, query);
      assert.equal(seen.length, atServer, JSON.stringify(seen.slice(atServer)));
      const log = networkLog(sb);
      assert.match(log, /secret tls api\.openai\.test:443 placeholder of secret `OPENAI_API_KEY` \(base64/, log);
      assert.match(log, /secret tls api\.openai\.test:443 placeholder of secret `OPENAI_API_KEY` .* in query/, log);
      assert.ok(!log.includes(VALUE));

      // An upstream whose certificate no trusted root signed: the guest's request fails.
      const untrusted = await request(sb, `https://${SECRET_HOST}:${UNTRUSTED_PORT}/v1/x`,
        "Authorization: Bearer $OPENAI_API_KEY");
      assert.match(untrusted, /^ERROR/m, untrusted);
      assert.ok(!seen.some((s) => s.port === UNTRUSTED_PORT), JSON.stringify(seen));

      // The value is nowhere the guest can read.
      // The pattern is sent in two halves: the value itself must not enter the guest.
      const half = VALUE.length / 2;
      const grep = await sb.exec("sh", ["-c",
        `grep -rlsF "$1$2" /etc /root /tmp /proc/[0-9]*/environ /proc/cmdline 2>/dev/null; echo done`,
        "sh", VALUE.slice(0, half), VALUE.slice(half)]);
      assert.equal(grep.stdout().trim(), "done", grep.stdout());
    } finally {
      await sb.stopAndWait();
    }
    const console = path.join(home, "sandboxes", "secrets-main", "console.log");
    assert.ok(!fs.readFileSync(console).includes(VALUE));
    assert.deepEqual(filesContaining(home, VALUE), []);
  });

  test("a host the secret does not name gets nothing, and the attempt is logged", async () => {
    const sb = await Sandbox.create(options({}, "all"));
    try {
      const before = seen.length;
      const out = await request(sb, `https://${OTHER_HOST}/steal`, "Authorization: Bearer $OPENAI_API_KEY");
      assert.match(out, /^ERROR/m, out);
      assert.ok(!seen.slice(before).some((s) => JSON.stringify(s).includes(VALUE)));
      assert.equal(seen.length, before, JSON.stringify(seen.slice(before)));
      const log = networkLog(sb);
      assert.match(log, /secret tls other\.test:443 placeholder of secret `OPENAI_API_KEY` .*host not allowed/, log);
      // Intercepted without a secret: a request without a placeholder goes through.
      const plain = await request(sb, `https://${OTHER_HOST}/fine`);
      assert.match(plain, /^STATUS 200 ok$/m, plain);
    } finally {
      await sb.stopAndWait();
    }
    assert.deepEqual(filesContaining(home, VALUE), []);
  });

  test("block-and-kill stops the sandbox with SecretViolationError", async () => {
    const sb = await Sandbox.create(
      options({
        secretEnv: { OPENAI_API_KEY: { value: VALUE, domain: SECRET_HOST, onViolation: "block-and-kill" } },
      }),
    );
    try {
      await request(sb, `https://${SECRET_HOST}/v1/x?key=$OPENAI_API_KEY`).catch(() => "");
      const deadline = Date.now() + 10_000;
      let error: unknown;
      while (Date.now() < deadline) {
        try {
          await sb.exec("true");
        } catch (e) {
          error = e;
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(error instanceof SecretViolationError, String(error));
      assert.equal((error as SecretViolationError).code, "SECRET_VIOLATION");
      assert.match((error as Error).message, /OPENAI_API_KEY/);
      assert.ok(!(error as Error).message.includes(VALUE));
    } finally {
      await sb.stopAndWait().catch(() => undefined);
    }
  });

  test("invalid secrets are refused before boot, naming the field", async () => {
    const cases: [SandboxOptions["secretEnv"], string][] = [
      [{ "BAD-NAME": { value: VALUE, domain: SECRET_HOST } }, "secretEnv"],
      [{ K: { value: "", domain: SECRET_HOST } }, "secretEnv.K.value"],
      [{ K: { value: VALUE, domain: "not a domain" } }, "secretEnv.K.domain"],
      [{ K: { value: VALUE } }, "secretEnv.K.domains"],
    ];
    for (const [secretEnv, field] of cases) {
      await assert.rejects(Sandbox.create({ image: python, secretEnv }), (e: Error & { field?: string }) => {
        assert.equal(e.field, field, e.message);
        assert.ok(!e.message.includes(VALUE), e.message);
        return true;
      });
    }
  });
});
