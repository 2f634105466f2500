#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, through the demo command, from an empty
# build cache) and runs the whole suite: formatting,
# lints, the TypeScript type check, the API reference's doc comments (typedoc),
# generated-binding drift, Rust unit and integration tests, a short fuzz run,
# the TypeScript unit and end-to-end tests (which boot real VMs under QEMU), and
# the npm packages installed into an empty project (scripts/pack.sh,
# __test__/install/).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# Each step heading is preceded by the previous step's wall time, so a slow step shows in CI's log.
step() {
    if [[ -n ${step_started:-} ]]; then printf '(%d s)\n' $((SECONDS - step_started)); fi
    step_started=$SECONDS
    printf '\n== %s\n' "$*"
}
started=$SECONDS

# The test runner's flags used below (--test-reporter-destination, --test-concurrency) and the SDK
# itself need Node.js 20 or later.
command -v node >/dev/null || { echo "test.sh: Node.js 20 or later is required; node is not on PATH" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || { echo "test.sh: Node.js 20 or later is required; this is node $(node --version)" >&2; exit 1; }

# node_tests GLOB [WRAPPER]...: runs the compiled test files GLOB matches with node's test runner
# (under WRAPPER, e.g. the network-namespace runner), the spec report on stdout and a TAP copy
# that is checked afterwards. Node exits 0 when nothing ran (a directory argument that matches no
# file on Node 20, a file that defines no test), so this fails when GLOB matches no file, when a
# file defined no test (TAP then reports the file itself as the test) or when node ran none.
# Every process the tests start carries a marker in its environment; any still alive when node
# returns is a leak (a fixture, runtime or VM a test failed to end) that would hold this script's
# output open and hang the caller: it is listed, killed, and fails the step.
node_tests() {
    local glob=$1 files file tap count status=0 marker empty=()
    shift
    mapfile -t files < <(compgen -G "$glob" | sort)
    ((${#files[@]} > 0)) || { echo "test.sh: no test files match $glob (is the TypeScript build missing?)" >&2; exit 1; }
    tap=$(mktemp)
    marker="MSB_TEST_RUN=$$-$RANDOM$RANDOM"
    env "$marker" "$@" node --test --test-concurrency=1 --test-timeout=600000 \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$tap" "${files[@]}" || status=$?
    kill_leftovers "$marker" || status=1
    ((status == 0)) || { rm -f -- "$tap"; exit 1; }
    count=$(sed -n 's/^# tests \([0-9][0-9]*\)$/\1/p' "$tap" | tail -n 1)
    for file in "${files[@]}"; do
        if grep -qxF -- "# Subtest: $PWD/$file" "$tap"; then empty+=("$file"); fi
    done
    rm -f -- "$tap"
    ((${#empty[@]} == 0)) || { echo "test.sh: these files define no tests: ${empty[*]}" >&2; exit 1; }
    [[ -n $count && $count -gt 0 ]] ||
        { echo "test.sh: node ran ${count:-no} tests from ${#files[@]} files matching $glob" >&2; exit 1; }
    echo "$count tests from ${#files[@]} files matching $glob"
}

# kill_leftovers NAME=VALUE: kills every live process whose environment holds NAME=VALUE; fails
# when there was one.
kill_leftovers() {
    local marker=$1 environ pid leaked=()
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        grep -qxzsF -- "$marker" "$environ" && leaked+=("$pid")
    done
    ((${#leaked[@]} == 0)) && return 0
    for pid in "${leaked[@]}"; do
        echo "test.sh: left running by the tests: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
    done
    kill -KILL -- "${leaked[@]}" 2>/dev/null || true
    return 1
}

# The generated bindings as they are before the build regenerates them: the drift check compares
# with these where there is no git history (a source tree that is not a checkout).
bindings_before=target/bindings-before-build
rm -rf -- "$bindings_before"
mkdir -p -- "$bindings_before"
for file in index.js index.d.ts; do
    if [[ -f $file ]]; then cp -- "$file" "$bindings_before/"; fi
done

step "setup and build: the README's demo command from an empty build cache"
# A bug on the path that fills the build cache (guest kernel, root filesystems) hides behind a warm
# cache, as it once did. So the suite starts from nothing: the demo command (which runs
# scripts/setup.sh, then boots the Debian root and must print from Python in the VM) builds into a
# fresh cache, and every later step reuses that cache, so the cold path costs one build, not two.
cold_cache=$(mktemp -d)
cold_log=$(mktemp)
trap 'rm -rf -- "$cold_cache" "$cold_log"' EXIT
export MSB_BUILD_CACHE=$cold_cache
MSB_HOME=$cold_cache/demo-home scripts/demo.sh 2>&1 | tee "$cold_log" | tail -n 8
grep -Eq '^42 [0-9]+\.[0-9]+' "$cold_log" ||
    { echo "the demo printed no Python output from a cold cache (log above)" >&2; exit 1; }

# The code runner's test root (Debian with python3, nodejs, matplotlib: mostly downloads and
# unpacking) builds in the background while the CPU-bound steps below run; the end-to-end step
# waits for it.
runner_root_log=$(mktemp)
scripts/rootfs-debian-runner.sh >"$runner_root_log" 2>&1 &
runner_root_pid=$!
trap 'kill "$runner_root_pid" 2>/dev/null || true; rm -rf -- "$cold_cache" "$cold_log" "$runner_root_log"' EXIT

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "TypeScript type check"
npx tsc -p tsconfig.json --noEmit

step "API reference: every export documented (typedoc)"
# typedoc.json makes an undocumented export, a broken {@link} or any other warning fail the
# step; --emit none checks without writing HTML (`npm run docs` writes target/api-docs/).
npx typedoc --emit none

step "generated bindings match the Rust source"
# build.sh regenerated index.js and index.d.ts from the #[napi] items. In a git checkout of this
# project they must equal the committed files; anywhere else, the files the tree carried before
# the build.
if [[ $(git rev-parse --show-toplevel 2>/dev/null) == "$root" ]]; then
    git diff --exit-code -- index.js index.d.ts ||
        { echo "index.js/index.d.ts drifted from src/lib.rs: commit the regenerated files" >&2; exit 1; }
else
    echo "not a git checkout: comparing with the bindings as they were before the build"
    for file in index.js index.d.ts; do
        [[ -f $bindings_before/$file ]] ||
            { echo "$file was missing before the build, so drift cannot be checked: ship the generated file" >&2; exit 1; }
        diff -u -- "$bindings_before/$file" "$file" ||
            { echo "$file drifted from src/lib.rs: ship the regenerated file" >&2; exit 1; }
    done
fi

step "Rust tests"
cargo test --quiet --workspace

step "fuzz: frame decoder, guest-message guard, HTTP rewriter and layer unpacker (20 s each)"
for target in frame_decoder guest_messages http_rewrite layer_unpack; do
    cargo fuzz run --sanitizer none "$target" -- -max_total_time=20 -print_final_stats=1 2>&1 | tail -n 3
done

step "loopback registries for the image tests"
scripts/registry.sh start

step "the code runner's test root (built in the background since the demo)"
wait "$runner_root_pid" || { cat -- "$runner_root_log" >&2; echo "test.sh: scripts/rootfs-debian-runner.sh failed" >&2; exit 1; }
tail -n 2 -- "$runner_root_log"

step "TypeScript unit and end-to-end tests (real VMs)"
node_tests 'dist/__test__/*.test.js'

step "network end-to-end tests (real VMs, inside test network namespaces)"
node_tests 'dist/__test__/netns/*.test.js' scripts/netns-run.sh

step "npm packages: pack, install into an empty project and boot from it; consumer typings"
scripts/pack.sh target/npm-pack
__test__/install/install.sh target/npm-pack
__test__/install/types.sh target/npm-pack

step "all passed in $((SECONDS - started)) s"
