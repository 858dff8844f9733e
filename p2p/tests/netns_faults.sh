#!/usr/bin/env bash
# netns_faults.sh: runs the network-fault test of p2p/tests/netns_faults.rs
# (faults_in_network_namespaces) inside private network namespaces, where
# it may drop packets (nftables), delay them (a proxy of the test) and cut a
# node off, without touching this machine's own network.
#
# Layout: five host namespaces manta-f<pid>-h1..h5 and one bridge namespace
# manta-f<pid>-br holding br0; each host has veth0 (10.213.78.N/24) whose
# peer vfN sits in the bridge namespace, attached to br0. All links are
# created inside these namespaces; the host namespace's interfaces and
# firewall are never touched (every nftables rule the test adds lives in a
# host namespace here). No multicast: the nodes join by bootstrap.
#
# Invariants: needs root, ip and nft (exits 1 otherwise, unless
# MANTA_NETNS_SKIP_OK=1, then 0); every namespace this script creates is
# deleted on exit, also on failure or interruption (trap), which also
# removes their links and rules; the exit status is the test's.
#
# Usage: sudo p2p/tests/netns_faults.sh [extra args for the test binary]
# Env: MANTA_CARGO (default: cargo) overrides the cargo command.
set -euo pipefail

skip_or_fail() {
    if [[ ${MANTA_NETNS_SKIP_OK:-} == 1 ]]; then
        echo "skipped: $1"
        exit 0
    fi
    echo "error: $0: $1 (set MANTA_NETNS_SKIP_OK=1 to skip instead)" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || skip_or_fail "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip_or_fail "needs ip (Debian package iproute2)"
command -v nft >/dev/null 2>&1 || skip_or_fail "needs nft (Debian package nftables)"

prefix="manta-f$$"
bridge="$prefix-br"
hosts=("$prefix-h1" "$prefix-h2" "$prefix-h3" "$prefix-h4" "$prefix-h5")
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
    peer="vf$n" # interface names must stay within 15 characters
    make_ns "$host"
    ip -n "$host" link add veth0 type veth peer name "$peer" netns "$bridge"
    ip -n "$bridge" link set "$peer" master br0
    ip -n "$bridge" link set "$peer" up
    ip -n "$host" addr add "10.213.78.$n/24" dev veth0
    ip -n "$host" link set veth0 up
done

echo "namespaces: ${created[*]}"
cd "$(dirname "$0")/../.."
log=$(mktemp)
# Nodes listening beyond loopback need a cluster secret: a fresh random one,
# passed in MANTA_SECRET (never on a command line) to every node and to
# `manta status`.
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
created_files+=("$log")
# The test runs as a background job in its own process group (set -m), so
# that an interrupt can end exactly it (cargo, the test, its node processes)
# before the namespaces go.
set -m
(MANTA_NETNS_FAULTS="${hosts[*]}" MANTA_SECRET="$secret" ${MANTA_CARGO:-cargo} test -p manta-p2p --test netns_faults -- --nocapture "$@" \
    2>&1 | tee "$log") &
job=$!
set +m
status=0
wait "$job" || status=$?
job=""
# A filter that matches nothing, or a test that skipped, also "passes":
# demand the test's own success line.
if [[ $status -eq 0 ]] && ! grep -q '^test faults_in_network_namespaces \.\.\. ok$' "$log"; then
    echo "error: faults_in_network_namespaces did not run and pass" >&2
    status=1
fi
exit "$status"
