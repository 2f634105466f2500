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

[[ $(id -u) -eq 0 ]] || msb_die "must run as root: debootstrap creates device nodes and chroot needs root"
msb_ensure_packages debootstrap

# apt's own parser covers both sources formats (one-line .list and deb822 .sources) and skips
# disabled files. `Release` is the suite as written in the sources, `Codename` the one the mirror
# reports (known once the lists are downloaded): either may spell bookworm. `Version` is the point
# release (12.x), which changes whenever the suite's packages do. One call: each apt invocation costs
# about half a second where the package cache is disabled, as in Debian's container images.
read -r mirror point_release < <(
	apt-get indextargets --format '$(RELEASE) $(CODENAME) $(COMPONENT) $(REPO_URI) $(VERSION)' \
		'Identifier: Packages' |
		awk -v suite="$suite" '($1 == suite || $2 == suite) && $3 == "main" { print $4, $5; exit }'
) || true
mirror=${MSB_DEBIAN_MIRROR:-$mirror}
[[ -n $mirror ]] ||
	msb_die "no apt source for Debian $suite main found; add one or set MSB_DEBIAN_MIRROR"

# The key follows what debootstrap will fetch. The versions come from the host's package lists for
# that suite only (not -security or -updates, which debootstrap does not use); the lists may lag the
# mirror, and `apt-get update` refreshes them.
python_versions=$(apt-cache madison "${python_pkgs[@]}" 2>/dev/null | grep -F " $suite/main " || true)
key=$(msb_cache_key "${BASH_SOURCE[0]}" "$suite" "$mirror" "$point_release" "$python_versions" \
	"debootstrap $(dpkg-query -W -f='${Version}' debootstrap)")

build() {
	local root=$1 answer
	debootstrap --variant=minbase --include=python3-minimal,python3 "$suite" "$root" "$mirror"
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
