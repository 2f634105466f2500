// Test support for images: the loopback registries (scripts/registry.sh), the
// project's push tool (msb-oci-testkit), and an HTTP proxy that counts and can
// break registry traffic.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";

import { repoRoot } from "./helpers";

export interface Registries {
  http: string;
  tls: string;
  basic: string;
  token: string;
  ca: string;
  user: string;
  password: string;
}

/** Starts (or finds running) the four loopback registries. */
export function registries(): Registries {
  const out = execFileSync(path.join(repoRoot, "scripts", "registry.sh"), ["start"], { encoding: "utf8" });
  const env: Record<string, string> = {};
  for (const match of out.matchAll(/^export (\w+)=(.*)$/gm)) env[match[1]] = match[2];
  const get = (key: string) => {
    const value = env[key];
    if (!value) throw new Error(`scripts/registry.sh start did not print ${key}`);
    return value;
  };
  return {
    http: get("MSB_TEST_REGISTRY_HTTP"),
    tls: get("MSB_TEST_REGISTRY_TLS"),
    basic: get("MSB_TEST_REGISTRY_BASIC"),
    token: get("MSB_TEST_REGISTRY_TOKEN"),
    ca: get("MSB_TEST_REGISTRY_CA"),
    user: get("MSB_TEST_REGISTRY_USER"),
    password: get("MSB_TEST_REGISTRY_PASSWORD"),
  };
}

const testkit = path.join(repoRoot, "target", "release", "msb-oci-testkit");

export interface PushOptions {
  layers?: string[];
  rawLayers?: string[];
  env?: string[];
  cmd?: string[];
  workdir?: string;
  user?: string;
  platform?: string;
  insecure?: boolean;
  ca?: string;
  credentials?: { username: string; password: string };
}

/** Builds an image from directories and pushes it; returns its manifest digest. */
export function push(reference: string, options: PushOptions): string {
  if (!fs.existsSync(testkit)) {
    throw new Error(`${testkit} is missing: scripts/build.sh builds it`);
  }
  const args = ["push", "--ref", reference];
  for (const layer of options.layers ?? []) args.push("--layer", layer);
  for (const layer of options.rawLayers ?? []) args.push("--raw-layer", layer);
  for (const kv of options.env ?? []) args.push("--env", kv);
  for (const arg of options.cmd ?? []) args.push("--cmd", arg);
  if (options.workdir) args.push("--workdir", options.workdir);
  if (options.user) args.push("--user", options.user);
  if (options.platform) args.push("--platform", options.platform);
  if (options.insecure) args.push("--insecure");
  if (options.ca) args.push("--ca", options.ca);
  if (options.credentials) {
    args.push("--username", options.credentials.username, "--password", options.credentials.password);
  }
  return execFileSync(testkit, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

/** Pushes an image index over manifests already pushed; returns its digest. */
export function pushIndex(reference: string, manifests: Record<string, string>, insecure = true): string {
  const args = ["index", "--ref", reference];
  for (const [platform, ref] of Object.entries(manifests)) args.push("--manifest", `${platform}=${ref}`);
  if (insecure) args.push("--insecure");
  return execFileSync(testkit, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

/** The registry's own file for a blob (plain-HTTP registry storage). */
export function registryBlobPath(digest: string): string {
  const hex = digest.replace("sha256:", "");
  const root = process.env.MSB_REGISTRY_DIR ?? "/tmp/msb-registries";
  return path.join(root, "http", "storage", "docker", "registry", "v2", "blobs", "sha256", hex.slice(0, 2), hex, "data");
}

export interface Proxy {
  /** `127.0.0.1:port` to use as the registry. */
  address: string;
  /** Method and path of every request seen, in order. */
  requests: string[];
  /** Blob downloads (GET without Range) per digest. */
  blobGets(digest: string): number;
  close(): Promise<void>;
}

/**
 * A plain-HTTP proxy in front of a registry. With `breakBlobsOnce`, the first
 * full download of each blob is cut off after half of its body, as a dropped
 * connection would; later requests (ranged resumes included) pass.
 */
export async function proxy(target: string, options: { breakBlobsOnce?: boolean } = {}): Promise<Proxy> {
  const [host, port] = target.split(":");
  const requests: string[] = [];
  const broken = new Set<string>();
  const server = http.createServer((req, res) => {
    const line = `${req.method} ${req.url}${req.headers.range ? ` range=${req.headers.range}` : ""}`;
    requests.push(line);
    const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? "")?.[1];
    const cut = options.breakBlobsOnce && req.method === "GET" && blob && !req.headers.range && !broken.has(blob);
    if (cut) broken.add(blob!);
    const upstream = http.request(
      { host, port: Number(port), method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (!cut) {
          up.pipe(res);
          return;
        }
        const total = Number(up.headers["content-length"] ?? 0);
        let sent = 0;
        up.on("data", (chunk: Buffer) => {
          const room = Math.floor(total / 2) - sent;
          if (room > 0) {
            res.write(chunk.subarray(0, room));
            sent += Math.min(room, chunk.length);
          }
          if (sent >= Math.floor(total / 2)) {
            up.destroy();
            res.socket?.destroy();
          }
        });
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    requests,
    blobGets: (digest) => requests.filter((r) => r === `GET ${r.split(" ")[1]}` && r.endsWith(`/blobs/${digest}`)).length,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
