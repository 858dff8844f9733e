#!/usr/bin/env bash
# netns_mdns.sh: runs the mDNS test of p2p/tests/multiprocess.rs
# (lan_discovery_by_mdns_in_network_namespaces) inside private network
# namespaces, so mDNS multicast never leaves this machine's own bridge.
#
# Layout: three host namespaces manta-<pid>-h1..h3 and one bridge namespace
# manta-<pid>-br holding br0; each host has veth0 (10.213.77.N/24) whose
# peer vhN sits in the bridge namespace, attached to br0. The host
# namespace's interfaces are never touched.
#
# mDNS needs a cluster secret: a fresh random one is passed to the nodes in
# MANTA_SECRET (never on a command line).
#
# Invariants: needs root (exits 1 otherwise, unless MANTA_NETNS_SKIP_OK=1,
# then 0); every namespace this script creates is deleted on exit, also on
# failure or interruption (trap); the exit status is the test's.
#
# Usage: sudo p2p/tests/netns_mdns.sh [extra args for the test binary]
# Env: MANTA_CARGO (default: cargo) overrides the cargo command.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    if [[ ${MANTA_NETNS_SKIP_OK:-} == 1 ]]; then
        echo "skipped: needs root (network namespaces)"
        exit 0
    fi
    echo "error: $0 needs root to create network namespaces (set MANTA_NETNS_SKIP_OK=1 to skip instead)" >&2
    exit 1
fi

prefix="manta-$$"
bridge="$prefix-br"
hosts=("$prefix-h1" "$prefix-h2" "$prefix-h3")
created=()
created_files=()
job=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [[ -n $job ]]; then
        kill -TERM -- "-$job" 2>/dev/null || true
        wait "$job" 2>/dev/null || true
    fi
    for ns in "${created[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "warning: could not delete namespace $ns" >&2
    done
    rm -f "${created_files[@]}"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

make_ns() {
    ip netns add "$1"
    created+=("$1")
    ip -n "$1" link set lo up
}

make_ns "$bridge"
ip -n "$bridge" link add br0 type bridge
ip -n "$bridge" link set br0 up

n=0
for host in "${hosts[@]}"; do
    n=$((n + 1))
    peer="vh$n" # interface names must stay within 15 characters
    make_ns "$host"
    ip -n "$host" link add veth0 type veth peer name "$peer" netns "$bridge"
    ip -n "$bridge" link set "$peer" master br0
    ip -n "$bridge" link set "$peer" up
    ip -n "$host" addr add "10.213.77.$n/24" dev veth0
    ip -n "$host" link set veth0 up
done

echo "namespaces: ${created[*]}"
cd "$(dirname "$0")/../.."
log=$(mktemp)
created_files+=("$log")
# The test runs as a background job in its own process group (set -m), so
# that an interrupt can end exactly it (cargo, the test, its node processes)
# before the namespaces go.
set -m
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
(MANTA_NETNS="${hosts[*]}" MANTA_SECRET="$secret" ${MANTA_CARGO:-cargo} test -p manta-p2p --test multiprocess lan_discovery -- --nocapture "$@" \
    2>&1 | tee "$log") &
job=$!
set +m
status=0
wait "$job" || status=$?
job=""
# A filter that matches nothing, or a test that skipped, also "passes":
# demand the test's own success line.
if [[ $status -eq 0 ]] && ! grep -q '^test lan_discovery_by_mdns_in_network_namespaces \.\.\. ok$' "$log"; then
    echo "error: lan_discovery_by_mdns_in_network_namespaces did not run and pass" >&2
    status=1
fi
exit "$status"
