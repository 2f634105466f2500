#!/usr/bin/env bash
# Prepares a Debian 12 machine (as root) to build, run and test microsandbox:
# system packages, JavaScript dependencies, Rust tools, then every build
# (scripts/build.sh). Idempotent: each step skips what is already in place.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source scripts/lib.sh

packages=(
    # The VMM and the guest kernel's source and build tools.
    qemu-system-x86 linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev xz-utils
    # Root filesystems for the demo and the tests.
    busybox-static debootstrap e2fsprogs  # e2fsprogs also formats disk volumes and persistent roots
    # Image tests and benchmarks: loopback registries, credentials, certificates, skopeo.
    docker-registry apache2-utils openssl skopeo curl
    # Network tests run in network namespaces (scripts/netns-run.sh).
    iproute2
)
msb_ensure_packages "${packages[@]}"

for tool in cargo rustc node npm; do
    command -v "$tool" >/dev/null || msb_die "$tool is missing: this project builds with the machine's Rust (rustup) and Node.js 20 toolchains"
done

# npm ci wipes node_modules; run it only when the lockfile changed since the last install.
stamp=node_modules/.msb-lock-hash
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
    msb_log "installing JavaScript dependencies"
    npm ci --no-audit --no-fund >&2
    echo "$lock_hash" >"$stamp"
fi

if ! command -v cargo-fuzz >/dev/null; then
    msb_log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

scripts/build.sh
