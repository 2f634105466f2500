# shellcheck shell=bash
# Shared by scripts/rootfs-*.sh: logging, package checks, and the rootfs cache.
#
# Cache contract: an entry is the directory
#   ${MSB_BUILD_CACHE:-$HOME/.cache/microsandbox}/rootfs/<name>-<key>
# and it exists only once complete. Builds run in a temporary sibling under a per-entry lock and are
# renamed into place at the end, so an interrupted build never leaves a half-built entry behind.

msb_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
msb_die() {
	msb_log "error: $*"
	exit 1
}

# msb_ensure_packages PKG...
# Installs with apt-get only the packages dpkg does not report as installed.
msb_ensure_packages() {
	local pkg missing=()
	for pkg in "$@"; do
		# `dpkg -s` also succeeds for removed packages whose config files remain; check the state.
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) -eq 0 ]] || msb_die "missing package(s) ${missing[*]}; install them or rerun as root"
	msb_log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Stale or absent package lists are the usual cause of a failed install: refresh once and retry.
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
		msb_die "apt-get could not install ${missing[*]}"
}

# msb_cache_key SCRIPT [INPUT...]
# Prints a short hash of the building script, this library and the given inputs (package versions,
# mirror, ...): anything that changes the built tree must be among them.
msb_cache_key() {
	local script=$1
	shift
	{
		cat -- "$script" "${BASH_SOURCE[0]}"
		printf '%s\n' "$@"
	} | sha256sum | cut -c1-16
}

# msb_debian_source SUITE
# For a debootstrap of Debian SUITE: checks root, installs debootstrap, and sets msb_mirror to the
# mirror this host's apt uses for SUITE's main component (MSB_DEBIAN_MIRROR overrides it; no mirror
# host is written into the repository) and msb_point_release to its point release (12.x).
# apt's own parser covers both sources formats (one-line .list and deb822 .sources) and skips
# disabled files. `Release` is the suite as written in the sources, `Codename` the one the mirror
# reports (known once the lists are downloaded): either may spell the suite. `Version` changes
# whenever the suite's packages do. One call: each apt invocation costs about half a second where
# the package cache is disabled, as in Debian's container images.
msb_debian_source() {
	local suite=$1
	[[ $(id -u) -eq 0 ]] || msb_die "must run as root: debootstrap creates device nodes and chroot needs root"
	msb_ensure_packages debootstrap
	# The '$(FIELD)' strings are apt's format fields, not shell expansions.
	# shellcheck disable=SC2016
	read -r msb_mirror msb_point_release < <(
		apt-get indextargets --format '$(RELEASE) $(CODENAME) $(COMPONENT) $(REPO_URI) $(VERSION)' \
			'Identifier: Packages' |
			awk -v suite="$suite" '($1 == suite || $2 == suite) && $3 == "main" { print $4, $5; exit }'
	) || true
	msb_mirror=${MSB_DEBIAN_MIRROR:-$msb_mirror}
	[[ -n $msb_mirror ]] ||
		msb_die "no apt source for Debian $suite main found; add one or set MSB_DEBIAN_MIRROR"
}

# msb_debian_key SCRIPT SUITE PKG...
# The cache key of a debootstrap root that SCRIPT builds from SUITE (after msb_debian_source): it
# follows what debootstrap will fetch. The versions of PKG... come from the host's package lists for
# that suite only (not -security or -updates, which debootstrap does not use); the lists may lag the
# mirror, and `apt-get update` refreshes them.
msb_debian_key() {
	local script=$1 suite=$2 versions
	shift 2
	versions=$(apt-cache madison "$@" 2>/dev/null | grep -F " $suite/main " || true)
	# '${Version}' is dpkg's format field, not a shell expansion.
	# shellcheck disable=SC2016
	msb_cache_key "$script" "$suite" "$msb_mirror" "$msb_point_release" "$versions" \
		"debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"
}

# msb_remove_tree DIR
# Removes a (partial) build. debootstrap mounts proc and sys inside its target, and a killed run can
# leave them mounted: unmount those first and never let rm cross into another filesystem.
msb_remove_tree() {
	local dir=$1 mnt
	[[ -e $dir ]] || return 0
	while IFS= read -r mnt; do
		umount -l -- "$mnt" 2>/dev/null || true
	done < <(awk -v prefix="$dir/" 'index($2, prefix) == 1 { print $2 }' /proc/self/mounts | sort -r)
	rm -rf --one-file-system -- "$dir" || msb_die "could not remove $dir (a mount left inside it?)"
}

# msb_cached_build NAME KEY BUILD_FN
# Prints the absolute path of the cache entry NAME-KEY, calling `BUILD_FN DIR` to fill an empty
# directory first when the entry does not exist. BUILD_FN's stdout goes to stderr, so the path is the
# only thing this prints on stdout.
msb_cached_build() {
	local name=$1 key=$2 build_fn=$3 cache entry start
	cache=${MSB_BUILD_CACHE:-$HOME/.cache/microsandbox}/rootfs
	mkdir -p -- "$cache" || msb_die "cannot create cache directory $cache"
	cache=$(cd -- "$cache" && pwd -P)
	entry=$cache/$name-$key
	if [[ -d $entry ]]; then
		printf '%s\n' "$entry"
		return 0
	fi

	# The lock serialises builds of one entry, which also makes a leftover temporary tree from a killed
	# build safe to delete: nobody else can be writing it.
	exec {MSB_LOCK_FD}>"$cache/.$name-$key.lock" || msb_die "cannot open lock file in $cache"
	if ! flock -n "$MSB_LOCK_FD"; then
		msb_log "waiting for another build of $name-$key"
		flock "$MSB_LOCK_FD"
	fi
	if [[ -d $entry ]]; then
		printf '%s\n' "$entry"
		return 0
	fi

	MSB_BUILD_TMP=$cache/.$name-$key.tmp
	msb_remove_tree "$MSB_BUILD_TMP"
	trap 'msb_remove_tree "$MSB_BUILD_TMP"' EXIT
	# Without these traps bash dies on the signal without running the EXIT trap.
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -- "$MSB_BUILD_TMP"

	msb_log "building $entry"
	start=$EPOCHREALTIME
	"$build_fn" "$MSB_BUILD_TMP" >&2
	mv -T -- "$MSB_BUILD_TMP" "$entry" || msb_die "could not rename the build into $entry"
	trap - EXIT INT TERM
	msb_log "built $name in $(awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }') s"
	printf '%s\n' "$entry"
}
