#!/usr/bin/env bash
# Builds the guest kernel (an ELF vmlinux with a PVH entry note) from Debian's
# linux-source-6.1 and this directory's config fragment, and copies it to $1.
#
# The result is cached under $MSB_BUILD_CACHE/kernel/<hash>, where the hash
# covers the fragment, this script and the kernel source package's version, so
# a second run with nothing changed only copies the cached file.
set -euo pipefail

out=${1:?usage: build.sh OUTPUT_VMLINUX}
# Every path is made absolute before the build changes directory: a relative
# output or cache path would otherwise land under the kernel tree or at /.
mkdir -p "$(dirname -- "$out")"
out=$(cd -- "$(dirname -- "$out")" && pwd -P)/$(basename -- "$out")
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
fragment=$here/microsandbox.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache_base=${MSB_BUILD_CACHE:-$HOME/.cache/microsandbox}
mkdir -p -- "$cache_base/kernel"
cache_root=$(cd -- "$cache_base/kernel" && pwd -P)

[ -f "$tarball" ] || { echo "build.sh: $tarball missing: apt-get install linux-source-6.1" >&2; exit 1; }
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
hash=$(cat "$fragment" "$here/build.sh" <(echo "$src_version") | sha256sum | cut -c1-16)
cached=$cache_root/$hash/vmlinux

if [ ! -f "$cached" ]; then
    work=$cache_root/build-$hash
    rm -rf "$work"
    mkdir -p "$work"
    echo "guest kernel: building $hash (linux-source $src_version), a few minutes" >&2
    tar -C "$work" -xf "$tarball"
    cd "$work"/linux-source-6.1
    make -s tinyconfig
    scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
    make -s olddefconfig
    # Fail loudly when an option of the fragment did not survive (unmet dependency), or one it
    # turns off is still on (selected by another).
    missing=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*) grep -qxF "$line" .config || { echo "kernel config lost: $line" >&2; missing=1; } ;;
            "# CONFIG_"*" is not set")
                option=${line#\# }
                option=${option%% *}
                if grep -q "^$option=" .config; then echo "kernel config: $option is still set" >&2; missing=1; fi ;;
        esac
    done <"$fragment"
    [ "$missing" = 0 ] || exit 1
    make -s -j"$(nproc)" vmlinux
    mkdir -p "$cache_root/$hash"
    cp .config "$cache_root/$hash/config"
    cp vmlinux "$cached.tmp"
    mv "$cached.tmp" "$cached"
    cd /
    rm -rf "$work"
fi

cp "$cached" "$out.tmp"
mv "$out.tmp" "$out"
echo "guest kernel: $out (config $hash)" >&2
