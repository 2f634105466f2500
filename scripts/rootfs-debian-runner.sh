#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) root with python3, nodejs and python3-matplotlib: the image of
# the PythonSandbox/NodeSandbox tests and benchmark. Uses debootstrap from the mirror this host's apt
# already uses. Prints the cached directory on stdout.
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
# The packages whose versions key the cache: the three asked for and the big pieces they pull in.
key_pkgs=(python3 python3.11 libpython3.11-stdlib nodejs libnode108 python3-matplotlib python3-numpy python3-pil)

msb_debian_source "$suite"
key=$(msb_debian_key "${BASH_SOURCE[0]}" "$suite" "${key_pkgs[@]}")

build() {
	local root=$1 answer
	debootstrap --variant=minbase --include=python3-minimal,python3,nodejs "$suite" "$root" "$msb_mirror"
	# matplotlib through the root's own apt, not --include: debootstrap's resolver does not follow
	# virtual packages (numpy's ABI provides), apt does. No recommends. python3-munkres satisfies
	# fonttools' `python3-scipy | python3-munkres`, whose first choice would pull in scipy, pythran and
	# a C++ toolchain (1.2 GiB instead of about 400 MiB).
	DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y --no-install-recommends \
		python3-matplotlib python3-munkres
	# Keep the root small: the package cache and lists are only useful to a later apt-get update;
	# the documentation and manual pages are never read in a sandbox.
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
	# The root's apt source names the mirror; a sandbox that wants packages brings its own.
	: >"$root/etc/apt/sources.list"
	# debootstrap copied the host's resolv.conf and hostname; the VM gets its own. Remove first, since
	# writing through a symlink here would land on the host.
	rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
	: >"$root/etc/resolv.conf"
	echo localhost >"$root/etc/hostname"

	answer=$(chroot "$root" python3 -c 'import matplotlib; print(6*7)') ||
		msb_die "python3 with matplotlib does not run in the new root"
	[[ $answer == 42 ]] || msb_die "python3 in the new root printed '$answer' instead of 42"
	answer=$(chroot "$root" node -e 'console.log(6*7)') || msb_die "node does not run in the new root"
	[[ $answer == 42 ]] || msb_die "node in the new root printed '$answer' instead of 42"
	msb_log "python3 $(chroot "$root" dpkg-query -W -f='${Version}' python3)," \
		"nodejs $(chroot "$root" dpkg-query -W -f='${Version}' nodejs)," \
		"python3-matplotlib $(chroot "$root" dpkg-query -W -f='${Version}' python3-matplotlib) from $suite," \
		"$(du -sh --one-file-system "$root" | cut -f1)"
}

msb_cached_build debian-runner "$key" build
