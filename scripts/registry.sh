#!/usr/bin/env bash
# Runs the OCI registries the image tests and benchmarks push to and pull from, all on loopback:
#
#   127.0.0.1:5000  plain HTTP, anonymous
#   127.0.0.1:5443  HTTPS (test CA), anonymous
#   127.0.0.1:5444  HTTPS + basic auth (htpasswd)
#   127.0.0.1:5445  HTTPS + bearer tokens from scripts/token-server.js on 127.0.0.1:5446
#                   (anonymous: pull only; with the test credentials: pull and push)
#
# Usage: scripts/registry.sh start|stop|env
#   start  starts whatever is not already running and healthy, waits until all answer, then prints
#          what `env` prints
#   stop   stops them (their storage is kept)
#   env    prints `export` lines: addresses, the CA file, a skopeo --cert-dir, the test credentials
#
# The registry is Debian's docker-registry (distribution 2.8). The test CA, the server certificate,
# the htpasswd file and the token signing key are made once and cached in
#   ${MSB_BUILD_CACHE:-$HOME/.cache/microsandbox}/registry/pki-v1
# Configs, storage, logs and pid files live in ${MSB_REGISTRY_DIR:-/tmp/msb-registries}/<name>/.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

readonly user=msb password=msb-secret
readonly token_addr=127.0.0.1:5446
readonly token_service=msb-test-registry token_issuer=msb-test-token-issuer
# Identifies the token server in its command line whichever checkout started it: a server left by
# another clone of this repository (same generation, see `start`) is ours to reuse or stop.
readonly token_needle="token-server.js --addr $token_addr"
# name -> port; the names are the runtime subdirectories and the keys of `probe`.
readonly -A ports=([http]=5000 [tls]=5443 [basic]=5444 [token]=5445)
readonly names=(http tls basic token)

# Bump the suffix when the generated material changes, so existing caches are regenerated.
pki=${MSB_BUILD_CACHE:-$HOME/.cache/microsandbox}/registry/pki-v1
run=${MSB_REGISTRY_DIR:-/tmp/msb-registries}

# pid_running PIDFILE NEEDLE
# Succeeds when PIDFILE names a live process whose command line contains NEEDLE (its config file's
# path, say), so a pid the kernel has since recycled for another program is never taken for ours.
pid_running() {
	local pidfile=$1 needle=$2 pid cmdline
	[[ -r $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"$needle"* ]]
}

# stop_pidfile PIDFILE NEEDLE
# Stops the process pid_running finds in PIDFILE: TERM, up to 5 s of grace, then KILL. Removes
# PIDFILE either way.
stop_pidfile() {
	local pidfile=$1 needle=$2 pid i
	if pid_running "$pidfile" "$needle"; then
		pid=$(<"$pidfile")
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			pid_running "$pidfile" "$needle" || break
			sleep 0.1
		done
		if pid_running "$pidfile" "$needle"; then
			msb_log "pid $pid ignored TERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f -- "$pidfile"
}

# wait_until SECONDS CMD [ARG...]
# Runs CMD every 0.1 s until it succeeds (then succeeds) or SECONDS have passed (then fails).
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

usage() {
	echo "usage: ${0##*/} start|stop|env" >&2
	exit 2
}

make_pki() {
	local dir=$1
	cat >"$dir/openssl.cnf" <<-'EOF'
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		CN = unused
		[ca_ext]
		basicConstraints = critical, CA:TRUE
		keyUsage = critical, keyCertSign, cRLSign
		subjectKeyIdentifier = hash
		[server_ext]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = serverAuth
		subjectAltName = IP:127.0.0.1, DNS:localhost
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		[token_ext]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature
		subjectKeyIdentifier = hash
	EOF
	local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
	openssl req -x509 "${ec[@]}" -config "$dir/openssl.cnf" -extensions ca_ext -days 3650 \
		-subj '/CN=microsandbox test registry CA' -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
	openssl req -new "${ec[@]}" -config "$dir/openssl.cnf" -subj '/CN=127.0.0.1' \
		-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
	openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 \
		-extfile "$dir/openssl.cnf" -extensions server_ext -out "$dir/server.pem" 2>/dev/null
	# Token signing: RS256 needs an RSA key; the registry reads its public half from a certificate.
	openssl req -x509 -newkey rsa:2048 -nodes -config "$dir/openssl.cnf" -extensions token_ext \
		-days 3650 -subj '/CN=microsandbox test token signer' \
		-keyout "$dir/token.key" -out "$dir/token.pem" 2>/dev/null
	htpasswd -Bbn "$user" "$password" >"$dir/htpasswd" 2>/dev/null
	# skopeo and podman take a directory of *.crt files (--cert-dir) rather than one CA file.
	mkdir "$dir/cert-dir"
	cp -- "$dir/ca.pem" "$dir/cert-dir/ca.crt"
	rm -f -- "$dir/server.csr" "$dir/openssl.cnf"
	chmod 0600 "$dir"/*.key
	openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null ||
		msb_die "the generated server certificate does not verify against the test CA"
}

# Makes the PKI once; concurrent callers wait for the first, and a killed run leaves only a
# temporary directory that the next one replaces.
ensure_pki() {
	[[ -f $pki/htpasswd ]] && return 0
	msb_ensure_packages openssl apache2-utils
	mkdir -p -- "${pki%/*}"
	exec {pki_lock}>"$pki.lock"
	flock "$pki_lock"
	if [[ ! -f $pki/htpasswd ]]; then
		local tmp=$pki.tmp
		rm -rf -- "$tmp"
		mkdir -- "$tmp"
		msb_log "generating the test CA, certificates and credentials in $pki"
		make_pki "$tmp"
		mv -T -- "$tmp" "$pki"
	fi
	exec {pki_lock}>&-
}

print_env() {
	local name var
	for name in "${names[@]}"; do
		var=MSB_TEST_REGISTRY_${name^^}
		printf 'export %s=%q\n' "$var" "127.0.0.1:${ports[$name]}"
	done
	printf 'export MSB_TEST_REGISTRY_CA=%q\n' "$pki/ca.pem"
	printf 'export MSB_TEST_REGISTRY_CERT_DIR=%q\n' "$pki/cert-dir"
	printf 'export MSB_TEST_REGISTRY_USER=%q\n' "$user"
	printf 'export MSB_TEST_REGISTRY_PASSWORD=%q\n' "$password"
}

write_registry_config() {
	local name=$1 dir=$run/$1
	mkdir -p -- "$dir/storage"
	{
		cat <<-EOF
			version: 0.1
			log:
			  level: info
			  formatter: text
			storage:
			  filesystem:
			    rootdirectory: $dir/storage
			  delete:
			    enabled: true
			  cache:
			    blobdescriptor: inmemory
			  maintenance:
			    uploadpurging:
			      enabled: false
			http:
			  addr: 127.0.0.1:${ports[$name]}
			  secret: msb-test-$name
			  headers:
			    X-Content-Type-Options: [nosniff]
		EOF
		if [[ $name != http ]]; then
			cat <<-EOF
				  tls:
				    certificate: $pki/server.pem
				    key: $pki/server.key
			EOF
		fi
		case $name in
		basic)
			cat <<-EOF
				auth:
				  htpasswd:
				    realm: msb-test-registry
				    path: $pki/htpasswd
			EOF
			;;
		token)
			cat <<-EOF
				auth:
				  token:
				    realm: http://$token_addr/token
				    service: $token_service
				    issuer: $token_issuer
				    rootcertbundle: $pki/token.pem
			EOF
			;;
		esac
	} >"$dir/config.yml"
}

# http_status URL [CURL_ARG...]: prints the HTTP status, 000 when nothing answered.
http_status() {
	local url=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$pki/ca.pem" "$@" -- "$url" || true
}

# probe NAME: succeeds when the service answers as configured. Each probe goes through the TLS and
# auth the clients use, so a registry left running with an older certificate or key fails it and
# gets restarted.
probe() {
	local token
	case $1 in
	http) [[ $(http_status "http://127.0.0.1:${ports[http]}/v2/") == 200 ]] ;;
	tls) [[ $(http_status "https://127.0.0.1:${ports[tls]}/v2/") == 200 ]] ;;
	basic)
		[[ $(http_status "https://127.0.0.1:${ports[basic]}/v2/") == 401 ]] &&
			[[ $(http_status "https://127.0.0.1:${ports[basic]}/v2/" -u "$user:$password") == 200 ]]
		;;
	token-server) [[ $(http_status "http://$token_addr/token?service=$token_service") == 200 ]] ;;
	token)
		token=$(curl -sf --max-time 2 "http://$token_addr/token?service=$token_service" |
			sed -n 's/.*"token":"\([^"]*\)".*/\1/p') || return 1
		[[ -n $token ]] &&
			[[ $(http_status "https://127.0.0.1:${ports[token]}/v2/") == 401 ]] &&
			[[ $(http_status "https://127.0.0.1:${ports[token]}/v2/" -H "Authorization: Bearer $token") == 200 ]]
		;;
	*) return 1 ;;
	esac
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_stray PORT NEEDLE
# Stops the listener on PORT when it is one of ours that lost its pid file (a run of another clone
# that was killed half-way, say): its command line contains NEEDLE.
stop_stray() {
	local port=$1 needle=$2 pid tmp
	pid=$(ss -Hltnp "sport = :$port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1)
	[[ -n $pid ]] || return 0
	tmp=$run/stray.pid
	echo "$pid" >"$tmp"
	if pid_running "$tmp" "$needle"; then
		msb_log "stopping pid $pid, an earlier instance on port $port without a pid file"
		stop_pidfile "$tmp" "$needle"
	fi
	rm -f -- "$tmp"
}

# ensure_running NAME PORT NEEDLE CMD...: leaves NAME running and healthy. NEEDLE identifies our
# process in its command line (see pid_running). A process of ours that is alive but does not
# pass its probe within a few seconds is restarted; a port held by anything else is an error.
ensure_running() {
	local name=$1 port=$2 needle=$3
	shift 3
	local dir=$run/$name pidfile=$run/$name/$name.pid log=$run/$name/$name.log
	if pid_running "$pidfile" "$needle"; then
		wait_until 5 probe "$name" && return 0
		msb_log "$name is running but unhealthy; restarting it"
	fi
	stop_pidfile "$pidfile" "$needle"
	stop_stray "$port" "$needle"
	if port_in_use "$port"; then
		msb_die "port $port is taken by a process this script did not start (stop it, or run '${0##*/} stop' if it is an older instance)"
	fi
	mkdir -p -- "$dir"
	# The child records its own pid before exec, so the pid file names the server whether or not
	# setsid had to fork. Output goes to the log: `$(registry.sh start)` must not wait on it. The
	# lock on the runtime dir stays with this script: a server holding it would block every later
	# start and stop.
	# shellcheck disable=SC2016 # $$ and $1 are the child's, not expanded here
	setsid bash -c 'echo $$ >"$1" && shift && exec "$@"' bash "$pidfile" "$@" \
		</dev/null >>"$log" 2>&1 {run_lock}>&- &
	wait_until 5 test -s "$pidfile" || msb_die "$name did not start; see $log"
}

start() {
	msb_ensure_packages docker-registry apache2-utils openssl skopeo curl iproute2
	command -v node >/dev/null || msb_die "node is missing (the token server is a Node.js script)"
	ensure_pki
	mkdir -p -- "$run"
	exec {run_lock}>"$run/.lock"
	flock "$run_lock"

	# Servers started from other certificates, keys or versions of these scripts are restarted:
	# their probes could pass while they no longer match what `env` prints.
	local generation registry name
	generation=$(cat -- "$pki/server.pem" "$pki/token.pem" "$pki/htpasswd" "${BASH_SOURCE[0]}" \
		"$here/token-server.js" | sha256sum | cut -c1-16)
	if [[ $(cat -- "$run/generation" 2>/dev/null) != "$generation" ]]; then
		[[ -f $run/generation ]] && msb_log "the test PKI or these scripts changed; restarting"
		stop_all
	fi
	echo "$generation" >"$run/generation"

	registry=$(dpkg -L docker-registry | grep -m1 -E '^/usr/s?bin/(docker-)?registry$') ||
		msb_die "docker-registry is installed but dpkg lists no registry binary"

	ensure_running token-server "${token_addr##*:}" "$token_needle" \
		node "$here/token-server.js" --addr "$token_addr" --key "$pki/token.key" \
		--cert "$pki/token.pem" --issuer "$token_issuer" --service "$token_service" \
		--user "$user" --password "$password"
	for name in "${names[@]}"; do
		write_registry_config "$name"
		ensure_running "$name" "${ports[$name]}" "$run/$name/config.yml" \
			"$registry" serve "$run/$name/config.yml"
	done

	for name in token-server "${names[@]}"; do
		if ! wait_until 30 probe "$name"; then
			tail -n 20 -- "$run/$name/$name.log" >&2 || true
			msb_die "$name did not become healthy; log: $run/$name/$name.log"
		fi
	done
	exec {run_lock}>&-
	print_env
}

stop_all() {
	local name
	for name in "${names[@]}"; do
		stop_pidfile "$run/$name/$name.pid" "$run/$name/config.yml"
	done
	stop_pidfile "$run/token-server/token-server.pid" "$token_needle"
	rm -f -- "$run/generation"
}

stop() {
	[[ -d $run ]] || return 0
	exec {run_lock}>"$run/.lock"
	flock "$run_lock"
	stop_all
	exec {run_lock}>&-
}

(($# == 1)) || usage
case $1 in
start) start ;;
stop) stop ;;
env)
	ensure_pki
	print_env
	;;
*) usage ;;
esac
