#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole suite: formatting,
# lints, the TypeScript type check, generated-binding drift, Rust unit and
# integration tests, a short fuzz run, and the TypeScript unit and end-to-end
# tests (which boot real VMs under QEMU).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

step "setup and build"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "TypeScript type check"
npx tsc -p tsconfig.json --noEmit

step "generated bindings match the Rust source"
# build.sh regenerated index.js and index.d.ts from the #[napi] items.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git diff --exit-code -- index.js index.d.ts ||
        { echo "index.js/index.d.ts drifted from src/lib.rs: commit the regenerated files" >&2; exit 1; }
fi

step "Rust tests"
cargo test --quiet --workspace

step "fuzz: frame decoder and layer unpacker (30 s each)"
for target in frame_decoder layer_unpack; do
    cargo fuzz run --sanitizer none "$target" -- -max_total_time=30 -print_final_stats=1 2>&1 | tail -n 3
done

step "loopback registries for the image tests"
scripts/registry.sh start

step "TypeScript unit and end-to-end tests (real VMs)"
node --test --test-concurrency=1 --test-timeout=600000 dist/__test__/*.test.js

step "network end-to-end tests (real VMs, inside test network namespaces)"
scripts/netns-run.sh node --test --test-concurrency=1 --test-timeout=600000 dist/__test__/netns/

step "all passed in $((SECONDS - started)) s"
