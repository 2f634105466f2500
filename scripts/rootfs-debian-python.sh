#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) root with python3 for tests and the demo, using debootstrap
# from the mirror this host's apt already uses. Prints the cached directory on stdout.
#
# MSB_DEBIAN_MIRROR overrides the mirror; the default is read from the apt sources at run time so that
# no mirror host is written into the repository.

# The '$(FIELD)' and '${Field}' strings below are apt and dpkg format strings, not shell expansions.
# shellcheck disable=SC2016
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

suite=bookworm
python_pkgs=(python3 python3-minimal python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib)

msb_debian_source "$suite"
key=$(msb_debian_key "${BASH_SOURCE[0]}" "$suite" "${python_pkgs[@]}")

build() {
	local root=$1 answer
	debootstrap --variant=minbase --include=python3-minimal,python3 "$suite" "$root" "$msb_mirror"
	# Keep the root small: the package cache and lists are only useful to a later apt-get update.
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/*
	# debootstrap copied the host's resolv.conf and hostname; the VM gets its own. Remove first, since
	# writing through a symlink here would land on the host.
	rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
	: >"$root/etc/resolv.conf"
	echo localhost >"$root/etc/hostname"

	answer=$(chroot "$root" python3 -c 'print(6*7)') || msb_die "python3 does not run in the new root"
	[[ $answer == 42 ]] || msb_die "python3 in the new root printed '$answer' instead of 42"
	msb_log "python3 $(chroot "$root" dpkg-query -W -f='${Version}' python3) from $suite"
}

msb_cached_build debian-python "$key" build
