#!/usr/bin/env bash
# Builds a tiny root filesystem from Debian's busybox-static for tests: one static binary, a symlink
# per applet, and the few files a shell and `id` expect. Prints the cached directory on stdout.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

msb_ensure_packages busybox-static
# Ask dpkg where the package put the binary instead of trusting PATH: the root has no libc, so it
# must get this static build.
busybox=$(dpkg -L busybox-static | grep -m1 -E '^/(usr/)?s?bin/busybox$') ||
	msb_die "busybox-static is installed but dpkg lists no busybox binary"
[[ -x $busybox ]] || msb_die "$busybox from busybox-static is missing or not executable"

build() {
	local root=$1 applet
	mkdir -p "$root"/{bin,etc,home,root,tmp,proc,sys,dev,run,usr}
	chmod 0700 "$root/root"
	chmod 1777 "$root/tmp"
	# Every applet lives in /bin; the other PATH directories point there, so both PATH lookups and
	# absolute paths such as /usr/bin/env or /sbin/reboot resolve.
	ln -s bin "$root/sbin"
	ln -s ../bin "$root/usr/bin"
	ln -s ../bin "$root/usr/sbin"
	cp -- "$busybox" "$root/bin/busybox"
	chmod 0755 "$root/bin/busybox"
	while IFS= read -r applet; do
		if [[ -n $applet && $applet != busybox ]]; then
			ln -s busybox "$root/bin/$applet"
		fi
	done < <("$busybox" --list)
	[[ -L $root/bin/sh ]] || msb_die "busybox has no sh applet"

	cat >"$root/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/bin/false
	EOF
	cat >"$root/etc/group" <<-'EOF'
		root:x:0:
		nogroup:x:65534:
	EOF
	cat >"$root/etc/os-release" <<-'EOF'
		NAME="microsandbox busybox test root"
		ID=microsandbox-busybox
	EOF
}

key=$(msb_cache_key "${BASH_SOURCE[0]}" "busybox-static $(dpkg-query -W -f='${Version}' busybox-static)")
msb_cached_build busybox "$key" build
