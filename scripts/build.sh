#!/usr/bin/env bash
# Builds everything the SDK runs: the guest kernel, the static guest agent and
# the runtime into assets/, then the napi addon (which regenerates index.js and
# index.d.ts) and the TypeScript facade into dist/. Each step reuses its cache:
# the kernel by config hash, Rust and TypeScript by their own incremental builds.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
step() { printf '== %s\n' "$*" >&2; }

mkdir -p assets
step "guest kernel"
guest/kernel/build.sh assets/vmlinux

step "guest agent (static)"
# crt-static links glibc into the agent; --target keeps these flags off build
# scripts and off the host binaries, which live in another target directory.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet -p msb-agent --profile release-agent --target x86_64-unknown-linux-gnu
install -m 0755 target/x86_64-unknown-linux-gnu/release-agent/msb-agent assets/msb-agent

step "runtime"
cargo build --quiet -p msb-runtime --release
install -m 0755 target/release/msb-runtime assets/msb-runtime

step "test tools"
# The push tool of the image tests; release: it compresses hundreds of MB.
cargo build --quiet -p msb-oci-testkit --release
# The impostor agent of the hostile-guest tests runs inside the guest, so it is
# static like the agent. Never shipped: the npm packages name each file they
# ship, and this is not one of them.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet -p msb-hostile-agent --profile release-agent --target x86_64-unknown-linux-gnu
install -m 0755 target/x86_64-unknown-linux-gnu/release-agent/msb-hostile-agent assets/msb-hostile-agent

step "napi addon"
npx napi build --platform --release --js index.js --dts index.d.ts >&2

step "TypeScript"
# tsc never deletes output: a test removed or renamed in __test__/ would keep running from a stale
# dist/__test__/*.js (scripts/test.sh runs every compiled test file there).
rm -rf -- dist/__test__
npx tsc -p tsconfig.json
