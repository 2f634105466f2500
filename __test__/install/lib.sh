# shellcheck shell=bash
# Shared by install.sh and types.sh: the packed tarballs, a throwaway project
# outside the checkout, a clean environment, and the pass/fail count.

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
here=$root/__test__/install
passed=0
failed=0

pass() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}

# fail NAME [DETAIL...]: DETAIL lines are printed indented under the name.
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    shift
    if (($# > 0)); then printf '%s\n' "$@" | sed 's/^/      /'; fi
}

# check NAME COMMAND...: passes when COMMAND succeeds; prints its output when not.
check() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then pass "$name"; else fail "$name" "$output"; fi
}

summary() {
    printf '\n%d passed, %d failed\n' "$passed" "$failed"
    ((failed == 0))
}

# use_tarballs [PACKDIR]: sets main_tgz and platform_tgz from PACKDIR (made by
# scripts/pack.sh), or packs into a temporary directory when none is given.
use_tarballs() {
    local dir version
    if (($# > 0)); then
        dir=$(realpath -m -- "$1")
    else
        dir=$(mktemp -d "${TMPDIR:-/tmp}/msb-pack.XXXXXX")
        cleanup+=("$dir")
        "$root/scripts/pack.sh" "$dir" >&2
    fi
    version=$(node -p 'require(process.argv[1]).version' "$root/package.json")
    main_tgz=$dir/microsandbox-$version.tgz
    platform_tgz=$dir/microsandbox-linux-x64-gnu-$version.tgz
    local tgz
    for tgz in "$main_tgz" "$platform_tgz"; do
        [[ -f $tgz ]] || { echo "missing $tgz: run scripts/pack.sh ${1:-}" >&2; exit 1; }
    done
}

# new_project LABEL: prints a new empty directory outside the checkout, removed at exit.
new_project() {
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/msb-$1.XXXXXX")
    dir=$(cd -- "$dir" && pwd -P)
    if [[ $dir/ == "$root"/* ]]; then
        echo "$dir is inside the checkout: set TMPDIR elsewhere" >&2
        exit 1
    fi
    printf '%s\n' "$dir"
}

# clean_env COMMAND...: runs COMMAND with nothing of the checkout on the module
# path and no asset overrides, so that the installed packages are what runs.
clean_env() {
    env -u NODE_PATH -u NODE_OPTIONS -u MSB_ASSETS_DIR -u MSB_KERNEL -u MSB_AGENT -u MSB_RUNTIME "$@"
}

cleanup=()
remove_cleanup() {
    if [[ ${MSB_KEEP_INSTALL_TEST:-} == 1 ]]; then
        printf 'kept %s\n' "${cleanup[@]}" >&2
    elif ((${#cleanup[@]} > 0)); then
        rm -rf -- "${cleanup[@]}"
    fi
}
trap remove_cleanup EXIT
