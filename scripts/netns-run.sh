#!/usr/bin/env bash
# Runs a command inside a network namespace built for the network tests, so
# that no packet can leave this machine whatever a policy says:
#
#   msb-sbx-PID   the sandbox side: the test process, its runtimes and VMs run here.
#             Only loopback and two veth links; no route to any real network.
#   msb-pub-PID   a "public" test host, 198.51.100.10 (TEST-NET-2, which the
#             policy treats as public).
#   msb-priv-PID  a host holding the addresses public-only must refuse:
#             10.0.0.10, 172.16.0.10, 192.168.1.10 and 169.254.169.254.
#
# Usage: scripts/netns-run.sh COMMAND [ARG]...   (as root). PID is this script's
# pid, so concurrent runs (two clones testing at once) do not meet. The namespaces
# are removed when the command ends, and those of runs that died are removed by the
# next run; the command sees their names in MSB_NETNS_SANDBOX, MSB_NETNS_PUBLIC
# and MSB_NETNS_PRIVATE.
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "netns-run.sh: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || { echo "netns-run.sh: iproute2 is missing" >&2; exit 1; }

sbx=msb-sbx-$$ pub=msb-pub-$$ priv=msb-priv-$$
cleanup() {
    for ns in "$sbx" "$pub" "$priv"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
# Namespaces left by runs whose script no longer lives.
for ns in $(ip netns list | awk '{print $1}'); do
    [[ $ns =~ ^msb-(sbx|pub|priv)-([0-9]+)$ ]] || continue
    kill -0 "${BASH_REMATCH[2]}" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
done

for ns in "$sbx" "$pub" "$priv"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

ip link add sbx-pub netns "$sbx" type veth peer name pub netns "$pub"
ip -n "$sbx" addr add 198.51.100.1/24 dev sbx-pub
ip -n "$pub" addr add 198.51.100.10/24 dev pub
ip -n "$sbx" link set sbx-pub up
ip -n "$pub" link set pub up

ip link add sbx-priv netns "$sbx" type veth peer name priv netns "$priv"
for pair in "10.0.0.1/24 10.0.0.10/24" "172.16.0.1/24 172.16.0.10/24" \
            "192.168.1.1/24 192.168.1.10/24" "169.254.0.1/16 169.254.169.254/16"; do
    read -r here there <<<"$pair"
    ip -n "$sbx" addr add "$here" dev sbx-priv
    ip -n "$priv" addr add "$there" dev priv
done
ip -n "$sbx" link set sbx-priv up
ip -n "$priv" link set priv up

MSB_NETNS_SANDBOX=$sbx MSB_NETNS_PUBLIC=$pub MSB_NETNS_PRIVATE=$priv \
    ip netns exec "$sbx" "$@"
