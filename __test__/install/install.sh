#!/usr/bin/env bash
# `npm install microsandbox` end to end: installs the packed tarballs with plain
# `npm install` into an empty project outside the checkout, then, from there and
# with no MSB_* asset overrides, boots VMs through `import`, through `require`
# and through the `msb` bin. Prints one line per check and `N passed, N failed`;
# exits non-zero when any check failed.
#
# usage: __test__/install/install.sh [PACKDIR]   (tarballs from scripts/pack.sh; packs when absent)
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

use_tarballs "$@"
rootfs=$("$root/scripts/rootfs-busybox.sh") || { echo "could not build the busybox root" >&2; exit 1; }
work=$(new_project install) || exit 1
cleanup+=("$work")
platform_dir=$work/node_modules/microsandbox-linux-x64-gnu
echo "project: $work"

# What the tarballs hold.
main_files=$(tar -tzf "$main_tgz" | sed 's|^package/||' | sort)
missing=()
for f in package.json README.md LICENSE index.js index.d.ts dist/index.d.ts \
    dist/ts/index.js dist/ts/index.d.ts dist/ts/index.mjs dist/ts/index.d.mts dist/ts/native.js dist/ts/cli/main.js dist/ts/cli/msr.js dist/ts/cli/msx.js dist/ts/cli/msi.js dist/ts/mcp/server.js; do
    grep -qxF "$f" <<<"$main_files" || missing+=("$f")
done
if ((${#missing[@]} == 0)); then pass "main tarball has the facade, its typings, the loader, README, LICENSE and the bin"
else fail "main tarball has the facade, its typings, the loader, README, LICENSE and the bin" "missing: ${missing[*]}"; fi
unwanted=$(grep -E '^(__test__|benchmark|examples|src|crates|guest|fuzz|scripts|assets|npm|docs)/|\.(rs|node)$|\.ts$' <<<"$main_files" |
    grep -vE '\.d\.ts$' || true)
if [[ -z $unwanted ]]; then pass "main tarball has no tests, benchmarks, Rust sources, TypeScript sources or binaries"
else fail "main tarball has no tests, benchmarks, Rust sources, TypeScript sources or binaries" "$unwanted"; fi

manifest_check() {
    tar -xOzf "$1" package/package.json | node -e "$2"
}
check "main package lists the platform package, same version, as an optional dependency" \
    manifest_check "$main_tgz" '
        const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const want = { "microsandbox-linux-x64-gnu": p.version };
        if (JSON.stringify(p.optionalDependencies) !== JSON.stringify(want))
            throw new Error(`optionalDependencies: ${JSON.stringify(p.optionalDependencies)}, want ${JSON.stringify(want)}`);
        if (p.scripts?.prepublishOnly) throw new Error("the packed manifest keeps the checkout-only prepublishOnly guard");'
check "platform package is linux/x64/glibc" \
    manifest_check "$platform_tgz" '
        const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const got = JSON.stringify([p.os, p.cpu, p.libc]);
        if (got !== JSON.stringify([["linux"], ["x64"], ["glibc"]])) throw new Error(`os/cpu/libc: ${got}`);'
platform_listing=$(tar -tvzf "$platform_tgz")
platform_has() { # MODE-PREFIX NAME
    awk -v mode="$1" -v name="package/$2" '$NF == name && index($1, mode) == 1 { found = 1 } END { exit !found }' <<<"$platform_listing"
}
missing=()
platform_has -rw microsandbox.linux-x64-gnu.node || missing+=("microsandbox.linux-x64-gnu.node")
platform_has -rw vmlinux || missing+=("vmlinux")
platform_has -rwx msb-runtime || missing+=("msb-runtime (executable)")
platform_has -rwx msb-agent || missing+=("msb-agent (executable)")
if ((${#missing[@]} == 0)); then pass "platform tarball has the addon, msb-runtime, msb-agent and vmlinux"
else fail "platform tarball has the addon, msb-runtime, msb-agent and vmlinux" "missing: ${missing[*]}" "$platform_listing"; fi

# Install, as a user would, into the empty project.
cp -- "$here/esm.mjs" "$here/cjs.cjs" "$here/provenance.cjs" "$work/"
cd "$work" || exit 1
echo '{ "name": "msb-install-test", "private": true }' >package.json
if output=$(clean_env npm install --no-audit --no-fund "$main_tgz" "$platform_tgz" 2>&1) &&
    [[ -f $platform_dir/package.json && -f $work/node_modules/microsandbox/package.json ]]; then
    pass "npm install <main.tgz> <platform.tgz> into an empty project"
else
    fail "npm install <main.tgz> <platform.tgz> into an empty project" "$output"
    summary
    exit 1
fi

# run_program LOGNAME COMMAND...: runs COMMAND in the project, sandboxes in their own home; sets `out`.
run_program() {
    local log=$1 home
    shift
    home=$(mktemp -d "$work/home.XXXXXX")
    out=$(clean_env MSB_HOME="$home" timeout 300 "$@" 2>"$work/$log.stderr")
    local rc=$?
    out_detail=("exit status $rc" "--- stdout" "$out" "--- stderr" "$(tail -n 30 "$work/$log.stderr")")
    return "$rc"
}

# expect_lines NAME LINE...: passes when every LINE is a line of `out`.
expect_lines() {
    local name=$1 line missing=()
    shift
    for line in "$@"; do
        grep -qxF -- "$line" <<<"$out" || missing+=("want: $line")
    done
    if ((${#missing[@]} == 0)); then pass "$name"; else fail "$name" "${missing[@]}" "${out_detail[@]}"; fi
}

from_platform=(
    "addon: $platform_dir/microsandbox.linux-x64-gnu.node"
    "runtime: $platform_dir/msb-runtime"
    "kernel: $platform_dir/vmlinux"
)

if run_program esm node esm.mjs "$rootfs"; then
    pass "import: a program importing { Sandbox, Patch, Image } runs"
else
    fail "import: a program importing { Sandbox, Patch, Image } runs" "${out_detail[@]}"
fi
expect_lines "import: resolves to the installed package's ES module entry" \
    "entry: file://$work/node_modules/microsandbox/dist/ts/index.mjs"
expect_lines "import: the same named exports as require, one copy of each class" \
    "exports: same as require" "one Sandbox class: true" "Image.list: function"
expect_lines "import: the addon, runtime and kernel come from the platform package" "${from_platform[@]}"
expect_lines "import: boots a VM from the busybox root and prints from inside it" \
    "vm: hello from Linux in the VM" "vm: patched in" "code: 0"

if run_program cjs node cjs.cjs "$rootfs"; then
    pass "require: a CommonJS program runs"
else
    fail "require: a CommonJS program runs" "${out_detail[@]}"
fi
expect_lines "require: resolves to the installed package's CommonJS entry" \
    "entry: $work/node_modules/microsandbox/dist/ts/index.js"
expect_lines "require: an unknown option is an InvalidOptionError naming the field" "unknown option: INVALID_OPTION cpu"
expect_lines "require: the addon, runtime and kernel come from the platform package" "${from_platform[@]}"
expect_lines "require: creates a sandbox, prints from inside it, stops it" \
    "running: true" "vm: hello from require" "running after stop: false"

if run_program bin npx --no msb run --rm "$rootfs" -- echo hi && [[ $out == hi ]]; then
    pass "bin: npx msb run --rm ROOTFS -- echo hi prints hi"
else
    fail "bin: npx msb run --rm ROOTFS -- echo hi prints hi" "${out_detail[@]}"
fi
# msx: the short bin for a temporary sandbox.
run_program bin-status npx --no msx "$rootfs" sh -c 'echo out; echo err >&2; exit 3'
rc=$?
if [[ $rc == 3 && $out == out ]] && grep -qxF err "$work/bin-status.stderr"; then
    pass "bin: msx passes stdout, stderr and the exit status through"
else
    fail "bin: msx passes stdout, stderr and the exit status through" "${out_detail[@]}"
fi

summary
