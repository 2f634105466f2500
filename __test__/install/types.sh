#!/usr/bin/env bash
# The published typings in a consumer project: installs the packed tarballs,
# TypeScript, @types/node and expect-type into an empty project outside the
# checkout, then type-checks types/consumer.ts with `tsc --strict
# --noImplicitAny --noEmit` (no skipLibCheck) under each module setting, and
# checks that the package's declarations hold no explicit `any`. Prints one
# line per check and `N passed, N failed`; exits non-zero when any failed.
#
# usage: __test__/install/types.sh [PACKDIR]   (tarballs from scripts/pack.sh; packs when absent)
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# TypeScript and @types/node come at the checkout's versions (its devDependencies).
expect_type_version=1.4.0

use_tarballs "$@"
work=$(new_project types) || exit 1
cleanup+=("$work")
echo "project: $work"

cp -- "$here/types/"*.json "$here/types/no-any.mjs" "$work/"
for ext in ts mts cts; do cp -- "$here/types/consumer.ts" "$work/consumer.$ext"; done
cd "$work" || exit 1
MAIN_TGZ=$main_tgz PLATFORM_TGZ=$platform_tgz EXPECT_TYPE=$expect_type_version node -e '
    const dev = require(process.argv[1]).devDependencies;
    const manifest = {
        name: "msb-types-test",
        private: true,
        dependencies: {
            microsandbox: `file:${process.env.MAIN_TGZ}`,
            "microsandbox-linux-x64-gnu": `file:${process.env.PLATFORM_TGZ}`,
        },
        devDependencies: {
            typescript: dev.typescript,
            "@types/node": dev["@types/node"],
            "expect-type": process.env.EXPECT_TYPE,
        },
    };
    require("fs").writeFileSync("package.json", JSON.stringify(manifest, null, 2) + "\n");
' "$root/package.json"
if output=$(clean_env npm install --no-audit --no-fund --prefer-offline 2>&1); then
    pass "npm install of the tarballs, typescript, @types/node and expect-type into an empty project"
else
    fail "npm install of the tarballs, typescript, @types/node and expect-type into an empty project" "$output"
    summary
    exit 1
fi

pkg=node_modules/microsandbox
for mode in nodenext node16 bundler node10; do
    # --listFiles shows that the package's declarations were in the program, so were checked.
    cmd=(node_modules/.bin/tsc -p "tsconfig.$mode.json" --strict --noImplicitAny --noEmit --listFiles)
    printf '\n$ %s\n' "${cmd[*]}"
    output=$(clean_env "${cmd[@]}" 2>&1)
    rc=$?
    grep -v "^$work/" <<<"$output"
    files=$(grep -F "$work/$pkg/" <<<"$output" | sed "s|^$work/$pkg/||" | sort)
    echo "(exit status $rc; checked from microsandbox: $(paste -sd ' ' <<<"$files"))"
    case $mode in
    node10) want=(dist/ts/index.d.ts dist/ts/native.d.ts dist/index.d.ts) ;;
    *) want=(dist/ts/index.d.ts dist/ts/index.d.mts dist/ts/native.d.ts dist/index.d.ts) ;;
    esac
    absent=()
    for f in "${want[@]}"; do grep -qxF "$f" <<<"$files" || absent+=("$f"); done
    if ((rc == 0 && ${#absent[@]} == 0)); then
        pass "tsc --strict without skipLibCheck, $mode: the fixture compiles, every @ts-expect-error is an error"
    else
        fail "tsc --strict without skipLibCheck, $mode: the fixture compiles, every @ts-expect-error is an error" \
            "exit status $rc" "${absent[@]/#/not checked: }"
    fi
done
echo

clean_env node no-any.mjs "$pkg" | head -n 1
check "no explicit any in the published declarations" clean_env node no-any.mjs "$pkg"
mkdir -p any-probe
printf 'export declare function f(x: any): void;\n/** any */\nexport declare const s: "any";\n' >any-probe/probe.d.ts
if output=$(clean_env node no-any.mjs any-probe); then
    fail "the any check finds an explicit any (and only that one) in a probe file" "$output"
elif grep -qxF "1 declaration files, 1 explicit any" <<<"$output"; then
    pass "the any check finds an explicit any (and only that one) in a probe file"
else
    fail "the any check finds an explicit any (and only that one) in a probe file" "$output"
fi

summary
