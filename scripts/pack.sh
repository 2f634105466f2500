#!/usr/bin/env bash
# Builds everything (scripts/build.sh) and packs the npm packages into OUTDIR
# (default target/npm-pack/ in the checkout), printing each tarball's path and
# size on stdout:
#   microsandbox-<version>.tgz                 the TypeScript facade and its typings, the generated
#                                              addon loader, the `msb` bin; lists the platform
#                                              package as an optional dependency
#   microsandbox-linux-x64-gnu-<version>.tgz   the addon, msb-runtime, the static msb-agent and
#                                              the guest kernel (manifest in npm/linux-x64-gnu/)
# Both are packed from a staging directory, OUTDIR/.stage, removed afterwards.
# Publish these tarballs (the platform package first), not the checkout.
#
# usage: scripts/pack.sh [OUTDIR]
set -euo pipefail
# Every path is made absolute before the script changes directory: OUTDIR is
# relative to the caller's working directory.
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
out=$(realpath -m -- "${1:-$root/target/npm-pack}")
cd "$root"
step() { printf '== %s\n' "$*" >&2; }

platform=linux-x64-gnu
platform_pkg=$root/npm/$platform
manifest() { node -p 'require(process.argv[1])[process.argv[2]]' "$1/package.json" "$2"; }
version=$(manifest "$root" version)
platform_name=$(manifest "$platform_pkg" name)
platform_version=$(manifest "$platform_pkg" version)
[[ $platform_version == "$version" ]] ||
    { echo "npm/$platform/package.json has version $platform_version, package.json $version (npx napi version syncs them)" >&2; exit 1; }

# Build output goes to stderr: stdout is the list of tarballs.
scripts/build.sh >&2

stage=$out/.stage
rm -rf -- "$stage"
mkdir -p -- "$stage/main" "$stage/$platform"

step "stage microsandbox@$version"
cp -- package.json README.md LICENSE index.js index.d.ts "$stage/main/"
# A clean compile of ts/ alone, so nothing stale from dist/ is shipped.
npx tsc -p tsconfig.build.json --outDir "$stage/main/dist" >&2
# The facade's declarations import the bindings as `../index`: from dist/ts/ that is dist/index.d.ts.
cp -- index.d.ts "$stage/main/dist/index.d.ts"
(
    cd "$stage/main"
    npm pkg set "optionalDependencies.$platform_name=$version"
    npm pkg delete scripts.prepublishOnly
)

step "stage $platform_name@$version"
cp -- "$platform_pkg/package.json" "$platform_pkg/README.md" LICENSE "$stage/$platform/"
install -m 0644 "microsandbox.$platform.node" assets/vmlinux "$stage/$platform/"
install -m 0755 assets/msb-runtime assets/msb-agent "$stage/$platform/"

step "npm pack"
npm pack --json --pack-destination "$out" "$stage/main" "$stage/$platform" |
    node -e '
        const [out] = process.argv.slice(1);
        let json = "";
        process.stdin.on("data", (chunk) => (json += chunk)).on("end", () => {
            for (const p of JSON.parse(json)) {
                const size = (n) => (n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);
                console.log(`${out}/${p.filename}\t${size(p.size)} packed, ${size(p.unpackedSize)} unpacked, ${p.entryCount} files`);
            }
        });' "$out"
rm -rf -- "$stage"
