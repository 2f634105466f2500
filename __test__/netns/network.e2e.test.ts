// End to end: the guest's network, checked by code inside real VMs. The whole
// test (this process, the runtimes, QEMU) runs in a network namespace built by
// scripts/netns-run.sh; the "public" and "private" test hosts live in further
// namespaces behind veth links. Nothing here can reach a real network, even
// if a policy were wrong.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import { PortInUseError, Sandbox, type NetworkOptions } from "../../ts/index";
import { busyboxRoot, isolatedHome, pythonRoot } from "../helpers";

const PUBLIC = "198.51.100.10";
const PRIVATE = ["10.0.0.10", "172.16.0.10", "192.168.1.10"];
const METADATA = "169.254.169.254";
/** The guest's gateway: it stands for the host (the sandbox's namespace). */
const GATEWAY = "100.96.0.1";
/** The sandbox namespace's own addresses (scripts/netns-run.sh): the host's, to the guest. */
const HOST_ADDRESSES = ["198.51.100.1", "10.0.0.1"];
/** What the upstream resolver on the public test host answers. */
const UPSTREAM_RECORDS: Record<string, string> = {
  "public.up.test": PUBLIC,
  "rebind.up.test": PRIVATE[0],
  "metadata.up.test": METADATA,
  "loopback.up.test": "127.0.0.1",
};

const home = isolatedHome("network");
let busybox: string;
let python: string;
const servers: { child: ChildProcess; seen: string[] }[] = [];
let publicSeen: string[];
let privateSeen: string[];

function startServers(namespace: string, addresses: string[]): Promise<string[]> {
  const seen: string[] = [];
  const child = spawn(
    "ip",
    ["netns", "exec", namespace, process.execPath, path.join(__dirname, "..", "fixtures", "net-servers.js"), ...addresses],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  servers.push({ child, seen });
  return new Promise((resolve, reject) => {
    let buffer = "";
    child.stdout!.on("data", (chunk) => {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        if (line === "ready") resolve(seen);
        else seen.push(line);
      }
    });
    child.on("exit", (code) => reject(new Error(`test servers in ${namespace} exited with ${code}`)));
  });
}

/** A TCP service on this namespace's own 127.0.0.1 (or, with "0.0.0.0", on all its addresses). */
async function loopbackService(
  address = "127.0.0.1",
): Promise<{ port: number; connections: () => number; close: () => void }> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    socket.end("loopback secret\n");
  });
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => server.close(),
  };
}

function networkLog(sb: Sandbox): string {
  const file = path.join(home, "sandboxes", sb.name, "network.log");
  return fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
}

async function withSandbox<T>(
  image: string,
  network: NetworkOptions,
  body: (sb: Sandbox) => Promise<T>,
  extra: { ports?: Record<number, number>; name?: string } = {},
): Promise<T> {
  const sb = await Sandbox.create({ image, network, memoryMib: 512, name: extra.name, ports: extra.ports });
  try {
    return await body(sb);
  } finally {
    await sb.stopAndWait();
  }
}

before(async () => {
  if (!process.env.MSB_NETNS_SANDBOX) {
    throw new Error("the network tests run inside test namespaces: scripts/netns-run.sh node --test dist/__test__/netns/");
  }
  busybox = busyboxRoot();
  python = pythonRoot();
  // The public host is also an upstream resolver whose answers the tests choose.
  const upstream = Object.entries(UPSTREAM_RECORDS).map(([name, ip]) => `dns:${name}=${ip}`);
  publicSeen = await startServers(process.env.MSB_NETNS_PUBLIC!, [PUBLIC, ...upstream]);
  privateSeen = await startServers(process.env.MSB_NETNS_PRIVATE!, [...PRIVATE, METADATA]);
});

after(() => {
  for (const { child } of servers) child.kill();
  fs.rmSync(home, { recursive: true, force: true });
});

describe("reaching public hosts", () => {
  test("TCP and UDP to an allowed host round-trip their bytes", async () => {
    await withSandbox(python, {}, async (sb) => {
      const out = await sb.exec("python3", [
        "-c",
        `import socket
tcp = socket.create_connection(("${PUBLIC}", 7), timeout=5)
tcp.sendall(b"hello-tcp")
tcp.shutdown(socket.SHUT_WR)
print(tcp.recv(64).decode())
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(5)
udp.sendto(b"hello-udp", ("${PUBLIC}", 7))
print(udp.recvfrom(64)[0].decode())
import urllib.request
print(urllib.request.urlopen("http://${PUBLIC}/", timeout=5).read().decode().strip())`,
      ]);
      assert.equal(out.stderr(), "");
      assert.equal(out.stdout(), `hello-tcp\nhello-udp\nhello from ${PUBLIC}\n`);
    });
    assert.ok(publicSeen.includes(`tcp ${PUBLIC}`) && publicSeen.includes(`udp ${PUBLIC}`));
  });
});

describe("public-only (the default)", () => {
  test("the host's loopback, private ranges and the metadata address are refused from inside the guest and logged", async () => {
    const loopback = await loopbackService();
    const before = privateSeen.length;
    const targets: [string, number][] = [[GATEWAY, loopback.port], ...PRIVATE.map((ip): [string, number] => [ip, 7]), [METADATA, 80]];
    try {
      await withSandbox(python, {}, async (sb) => {
        const out = await sb.exec("python3", [
          "-c",
          `import socket
def tcp(host, port):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"x")
        return s.recv(64).decode() or "closed"
    except OSError as e:
        return type(e).__name__
def udp(host, port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(b"x", (host, port))
    try:
        return u.recvfrom(64)[0].decode()
    except OSError as e:
        return type(e).__name__
for host, port in ${JSON.stringify(targets)}:
    print(host, tcp(host, port))
print("udp", udp("${PRIVATE[0]}", 7), udp("${METADATA}", 7))`,
        ]);
        assert.equal(out.stderr(), "");
        const expected = targets.map(([host]) => `${host} ConnectionRefusedError`).join("\n");
        assert.equal(out.stdout(), `${expected}\nudp TimeoutError TimeoutError\n`);
        const log = networkLog(sb);
        assert.match(log, new RegExp(`deny tcp 127\\.0\\.0\\.1:${loopback.port} default public-only \\(loopback\\)`));
        for (const ip of PRIVATE) {
          assert.match(log, new RegExp(`deny tcp ${ip.replace(/\./g, "\\.")}:7 default public-only \\(private\\)`));
        }
        assert.match(log, /deny tcp 169\.254\.169\.254:80 default public-only \(link-local\)/);
        assert.match(log, /deny udp 10\.0\.0\.10:7 default public-only \(private\)/);
        assert.match(log, /deny udp 169\.254\.169\.254:7 default public-only \(link-local\)/);
      });
      assert.equal(loopback.connections(), 0);
      assert.deepEqual(privateSeen.slice(before), [], "a private test host was reached");
    } finally {
      loopback.close();
    }
  });

  test("the host's own addresses are refused like its loopback, whatever their range", async () => {
    // A host service bound on every address answers on the namespace's own addresses too, and
    // 198.51.100.1 is "public" by its range alone.
    const service = await loopbackService("0.0.0.0");
    try {
      await withSandbox(python, {}, async (sb) => {
        const out = await sb.exec("python3", [
          "-c",
          `import socket
for host in ${JSON.stringify(HOST_ADDRESSES)}:
    try:
        print(host, socket.create_connection((host, ${service.port}), timeout=3).recv(64).decode().strip())
    except OSError as e:
        print(host, type(e).__name__)`,
        ]);
        assert.equal(out.stderr(), "");
        assert.equal(out.stdout(), HOST_ADDRESSES.map((ip) => `${ip} ConnectionRefusedError\n`).join(""));
        for (const ip of HOST_ADDRESSES) {
          const line = `deny tcp ${ip}:${service.port} default public-only (host)`;
          assert.ok(networkLog(sb).includes(line), `no "${line}" in the network log`);
        }
      });
      assert.equal(service.connections(), 0);
    } finally {
      service.close();
    }
  });

  test("an allow rule for one loopback port lets exactly that port through", async () => {
    const allowed = await loopbackService();
    const other = await loopbackService();
    try {
      await withSandbox(busybox, { rules: [{ action: "allow", cidr: "127.0.0.1", ports: allowed.port }] }, async (sb) => {
        const yes = await sb.shell(`nc -w 3 ${GATEWAY} ${allowed.port} </dev/null`);
        assert.equal(yes.stdout(), "loopback secret\n");
        const no = await sb.shell(`nc -w 3 ${GATEWAY} ${other.port} </dev/null; echo "rc=$?"`);
        assert.equal(no.stdout(), "rc=1\n");
        assert.match(networkLog(sb), new RegExp(`deny tcp 127\\.0\\.0\\.1:${other.port}`));
      });
      assert.equal(allowed.connections(), 1);
      assert.equal(other.connections(), 0);
    } finally {
      allowed.close();
      other.close();
    }
  });
});

describe("DNS", () => {
  test("blocked suffixes are NXDOMAIN inside the guest while other names resolve", async () => {
    const network: NetworkOptions = {
      blockDomainSuffixes: [".evil.test"],
      hosts: { "good.test": PUBLIC, "api.evil.test": PUBLIC, "evil.test": PUBLIC },
    };
    await withSandbox(python, network, async (sb) => {
      const out = await sb.exec("python3", [
        "-c",
        `import socket
for name in ["good.test", "evil.test", "api.evil.test"]:
    try:
        print(name, socket.gethostbyname(name))
    except socket.gaierror as e:
        print(name, "error", e.errno == socket.EAI_NONAME)
import urllib.request
print(urllib.request.urlopen("http://good.test/", timeout=5).read().decode().strip())`,
      ]);
      assert.equal(out.stderr(), "");
      assert.equal(
        out.stdout(),
        `good.test ${PUBLIC}\nevil.test error True\napi.evil.test error True\nhello from ${PUBLIC}\n`,
      );
      assert.match(networkLog(sb), /evil\.test/);
    });
  });

  test("queries to any other resolver are answered by the sandbox's DNS; DNS over TCP and TLS is refused", async () => {
    const before = publicSeen.length;
    // The public test host is a resolver that knows public.up.test: asked directly, it would
    // answer the blocked name. 9.9.9.9 has no route from the test namespace at all.
    const network: NetworkOptions = { blockDomains: ["public.up.test"], hosts: { "good.test": PUBLIC } };
    await withSandbox(python, network, async (sb) => {
      const out = await sb.exec("python3", [
        "-c",
        `import socket, struct
def query(server, name):
    q = struct.pack(">HHHHHH", 0x4d53, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + bytes(1)
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, (server, 53))
    try:
        data, (src, port) = s.recvfrom(2048)
    except OSError as e:
        return type(e).__name__
    return "from=%s:%d rcode=%d answers=%d" % (src, port, data[3] & 15, struct.unpack(">H", data[6:8])[0])
def tcp(port):
    try:
        socket.create_connection(("${PUBLIC}", port), timeout=3)
        return "connected"
    except OSError as e:
        return type(e).__name__
print(query("9.9.9.9", "public.up.test"))
print(query("${PUBLIC}", "public.up.test"))
print(query("${PUBLIC}", "good.test"))
print(tcp(53), tcp(853))`,
      ]);
      assert.equal(out.stderr(), "");
      assert.equal(
        out.stdout(),
        [
          "from=9.9.9.9:53 rcode=3 answers=0",
          `from=${PUBLIC}:53 rcode=3 answers=0`,
          `from=${PUBLIC}:53 rcode=0 answers=1`,
          "ConnectionRefusedError ConnectionRefusedError",
          "",
        ].join("\n"),
      );
      const log = networkLog(sb);
      assert.match(log, /dns-block dns public\.up\.test block list/);
      assert.match(log, /deny tcp 198\.51\.100\.10:53 dns-over-tcp/);
      assert.match(log, /deny tcp 198\.51\.100\.10:853 dns-over-tls/);
    });
    assert.deepEqual(publicSeen.slice(before), [], "the public resolver was reached");
  });

  test("a domain allow rule only matches addresses the sandbox resolved itself", async () => {
    const loopback = await loopbackService();
    try {
      // `host.loop.test` resolves (through the sandbox's DNS) to the gateway, i.e. the host.
      const network: NetworkOptions = {
        rules: [{ action: "allow", domainSuffix: ".loop.test" }],
        hosts: { "host.loop.test": GATEWAY },
      };
      await withSandbox(python, network, async (sb) => {
        const out = await sb.exec("python3", [
          "-c",
          `import socket
def attempt(host):
    try:
        return socket.create_connection((host, ${loopback.port}), timeout=3).recv(64).decode().strip()
    except OSError as e:
        return type(e).__name__
print(attempt("${GATEWAY}"))
print(attempt("host.loop.test"))`,
        ]);
        assert.equal(out.stdout(), "ConnectionRefusedError\nloopback secret\n");
      });
    } finally {
      loopback.close();
    }
  });
});

describe("DNS from an upstream resolver", () => {
  test("answers pointing at denied ranges are refused inside the guest (rebinding) and logged", async () => {
    await withSandbox(python, { dnsServers: [PUBLIC] }, async (sb) => {
      const out = await sb.exec("python3", [
        "-c",
        `import socket, urllib.request
for name in ${JSON.stringify(Object.keys(UPSTREAM_RECORDS))}:
    try:
        print(name, socket.gethostbyname(name))
    except socket.gaierror as e:
        print(name, "unresolved")
print(urllib.request.urlopen("http://public.up.test/", timeout=5).read().decode().strip())`,
      ]);
      assert.equal(out.stderr(), "");
      assert.equal(
        out.stdout(),
        [
          `public.up.test ${PUBLIC}`,
          "rebind.up.test unresolved",
          "metadata.up.test unresolved",
          "loopback.up.test unresolved",
          `hello from ${PUBLIC}`,
          "",
        ].join("\n"),
      );
      const log = networkLog(sb);
      for (const name of ["rebind", "metadata", "loopback"]) {
        assert.match(log, new RegExp(`dns-rebind \\S+ ${name}\\.up\\.test=`), log);
      }
    });
    assert.ok(publicSeen.includes(`dns ${PUBLIC}`), "the upstream resolver was never asked");
  });
});

describe("policy none", () => {
  test("nothing leaves the VM", async () => {
    const before = publicSeen.length;
    await withSandbox(busybox, { policy: "none", hosts: { "pub.test": PUBLIC } }, async (sb) => {
      const out = await sb.shell(
        `echo x | nc -w 2 ${PUBLIC} 7; echo "tcp=$?"; echo x | nc -u -w 1 ${PUBLIC} 7; echo "udp=$?"; wget -q -T 2 -O - http://${PUBLIC}/ ; echo "http=$?"; ping -c 1 -W 1 127.0.0.1 >/dev/null && echo loopback-ok`,
      );
      assert.match(out.stdout(), /tcp=1/);
      assert.match(out.stdout(), /http=1/);
      assert.doesNotMatch(out.stdout(), /^x$/m);
      assert.match(networkLog(sb), /deny tcp 198\.51\.100\.10:7 default none/);
    });
    assert.deepEqual(publicSeen.slice(before), [], "the public host was reached under policy none");
  });
});

describe("published ports", () => {
  test("a web server in the guest is reached from the host", async () => {
    await withSandbox(busybox, {}, async (sb) => {
      const [published] = sb.bootInfo.publishedPorts;
      assert.equal(published.guestPort, 80);
      await sb.shell("mkdir -p /www && echo 'served by the guest' > /www/index.html && httpd -p 80 -h /www");
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get(`http://${published.host}/`, (res) => {
            let text = "";
            res.on("data", (d) => (text += d));
            res.on("end", () => resolve(text));
          })
          .on("error", reject);
      });
      assert.equal(body, "served by the guest\n");
    }, { ports: { 0: 80 } });
  });

  test("a host port already in use is a typed error at create time", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      await assert.rejects(Sandbox.create({ image: busybox, ports: { [port]: 80 } }), (err: unknown) => {
        assert.ok(err instanceof PortInUseError, String(err));
        assert.match(err.message, new RegExp(String(port)));
        return true;
      });
    } finally {
      taken.close();
    }
  });
});

describe("limits", () => {
  test("10,000 connection attempts from the guest leave the host's fds and memory bounded", async () => {
    await withSandbox(python, {}, async (sb) => {
      const runtime = Number(fs.readFileSync(`/proc/${sb.bootInfo.vmPid}/stat`, "utf8").split(") ")[1].split(" ")[1]);
      const fds = () => fs.readdirSync(`/proc/${runtime}/fd`).length;
      const baseline = fds();
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, fds())), 50);
      try {
        const out = await sb.exec("python3", [
          "-c",
          `import resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
socks = []
for i in range(10000):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("${PUBLIC}", 7))
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(3)
print(len(socks))`,
        ], { timeout: 300_000 });
        assert.equal(out.stdout(), "10000\n");
      } finally {
        clearInterval(sampler);
      }
      const status = fs.readFileSync(`/proc/${runtime}/status`, "utf8");
      const peakRssMib = Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
      // Default limit: 256 flows, one host socket each, plus the runtime's own descriptors.
      assert.ok(peak - baseline <= 256 + 16, `runtime fds went from ${baseline} to ${peak}`);
      assert.ok(peakRssMib < 128, `runtime peak RSS ${peakRssMib.toFixed(1)} MiB`);
      assert.match(networkLog(sb), /limits\.max_flows/);
      process.stdout.write(`# flood: runtime fds ${baseline} -> peak ${peak}, peak RSS ${peakRssMib.toFixed(1)} MiB\n`);
    });
  });
});
