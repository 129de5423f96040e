#!/usr/bin/env bash
# Proves that the cluster scripts refuse to start anything when the
# network namespace is not as required (missing, with a default route,
# without the node address, or when run outside of it), that node.sh runs
# no go command, and that teardown removes every process, cgroup and mount
# a cluster leaves and fails, naming it, when it cannot. Uses a namespace,
# a state directory, a binaries directory and a cgroup name of its own, so
# a running cluster is not touched, and checks that the host is unchanged
# afterwards.
set -uo pipefail
KV_CLUSTER_DIR=$(mktemp -d) KV_CACHE_DIR=$(mktemp -d)
export KV_NETNS=kvguard KV_KUBEPODS_CGROUP=kvguard-pods KV_CLUSTER_DIR KV_CACHE_DIR KV_HOSTPATH_DIR=$KV_CLUSTER_DIR/hostpath_pv
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, cgroups, mounts)"
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  ip netns del "$NETNS" 2>/dev/null
  bash "$ROOT/hack/cluster/down.sh" >/dev/null 2>&1
  rm -rf "$KV_CLUSTER_DIR" "$KV_CACHE_DIR"
}
trap cleanup EXIT
before=$(host_state)
fails=0 passes=0
ok() { echo "ok: $*"; passes=$((passes+1)); }
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
expect_refusal() { # description, expected message, command...
  local what=$1 msg=$2; shift 2
  local out
  if out=$("$@" 2>&1); then
    fail "$what: it started"; return
  fi
  if ! grep -q "$msg" <<<"$out"; then
    fail "$what: refused, but not with '$msg': $out"; return
  fi
  ok "$what: $(grep -o "ERROR: .*" <<<"$out" | head -1)"
}
# shellcheck disable=SC2317 # run by expect_refusal
node() { STATE=$KV_CLUSTER_DIR BINDIR=/nonexistent bash "$ROOT/hack/cluster/node.sh"; }

echo "== the network namespace"
expect_refusal "namespace missing" "namespace $NETNS is missing" check_ns
expect_refusal "node.sh outside the namespace" "not inside network namespace" node

ip netns add "$NETNS"
in_ns ip link set lo up
expect_refusal "no node address" "node address" check_ns
in_ns ip addr add "$NODE_IP/32" dev lo
in_ns ip route add default dev lo
expect_refusal "a default route" "default route" check_ns
expect_refusal "node.sh with a default route" "default route" in_ns env STATE="$KV_CLUSTER_DIR" BINDIR=/nonexistent bash "$ROOT/hack/cluster/node.sh"
in_ns ip route del default dev lo
in_ns ip -6 route add default dev lo 2>/dev/null && expect_refusal "an IPv6 default route" "default route" check_ns
in_ns ip -6 route del default dev lo 2>/dev/null
if ( check_ns ) 2>/dev/null; then ok "a correct namespace passes the checks"; else fail "a correct namespace is refused"; fi
# shellcheck disable=SC2016 # expanded inside the namespace
out=$(in_ns sh -c 'echo "$GOPROXY $GOFLAGS"')
if [ "$out" = "off -mod=mod" ]; then ok "commands in the namespace run with GOPROXY=off GOFLAGS=-mod=mod"; else fail "commands in the namespace see GOPROXY GOFLAGS = $out"; fi
ip netns del "$NETNS"

echo "== nothing downloads inside the namespace"
# The namespace has no route out: node.sh must use what up.sh built on the host.
if grep -nE '(^|[;&|(`[:space:]])go[[:space:]]+(build|run|install|get|mod|generate|test|tool)\b' "$ROOT/hack/cluster/node.sh"; then
  fail "node.sh runs go (above): build the tool on the host in hack/build-helpers.sh"
else
  ok "node.sh runs no go command"
fi

echo "== host_state sees mounts"
mkdir -p "$STATE/m"
mount -t tmpfs kvguard "$STATE/m"
if [ "$(host_state)" != "$before" ]; then ok "a new mount changes host_state"; else fail "host_state misses a new mount"; fi
umount "$STATE/m"

echo "== teardown removes what a cluster leaves"
# What a cluster can leave behind after containerd and its shims died:
# a pod's processes in its cgroups, reparented to init; a binary from
# $BINDIR; processes working in or reading from the state directory; nested mounts.
leave_behind() { # cgroup (below $KUBEPODS), then the pids file to write
  local cg=$1 pidfile=$2 h attached=
  ( setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > "$pidfile" )
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -f "$h/cgroup.procs" ] || continue
    mkdir -p "$h/$KUBEPODS/$cg"
    # cpuset refuses tasks until it has CPUs and memory nodes: skip it.
    if cat "$pidfile" > "$h/$KUBEPODS/$cg/cgroup.procs" 2>/dev/null; then attached=1; fi
  done
  [ -n "$attached" ] || die "could not put a process into any $KUBEPODS cgroup"
}
gone() { # pid: true when the process is gone (or a zombie, which holds nothing)
  # SIGKILL is delivered asynchronously: a process can still be exiting
  # (its /proc entry there, its status unreadable) just after down.sh
  # returns, so give it a few seconds before calling it alive.
  for _ in $(seq 50); do
    if [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
mkdir -p "$STATE"/{pids,logs} "$BINDIR" "$STATE/containerd/rootfs"
host_state > "$STATE/host-before.txt"
ip netns add "$NETNS"
leave_behind pod1/sandbox "$STATE/p1"
cp "$(command -v sleep)" "$BINDIR/fake-shim"
( setsid "$BINDIR/fake-shim" 600 </dev/null >/dev/null 2>&1 & echo $! > "$STATE/p2" )
( cd "$STATE/logs" && setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > "$STATE/p3" )
touch "$STATE/logs/kubelet.log"
( setsid tail -f "$STATE/logs/kubelet.log" </dev/null >/dev/null 2>&1 & echo $! > "$STATE/p4" )
mount -t tmpfs kvguard "$STATE/containerd/rootfs"
mkdir -p "$STATE/containerd/rootfs/volume"
mount -t tmpfs kvguard "$STATE/containerd/rootfs/volume"
pids="$(cat "$STATE/p1") $(cat "$STATE/p2") $(cat "$STATE/p3") $(cat "$STATE/p4")"
left=$(leftovers)
for want in "in a $KUBEPODS cgroup" "runs $BINDIR/fake-shim" "cgroup /sys/fs/cgroup/.*/$KUBEPODS/pod1/sandbox" "mount $STATE/containerd/rootfs/volume"; do
  if grep -q -- "$want" <<<"$left"; then ok "the check names a leftover: $(grep -m1 -- "$want" <<<"$left")"; else fail "the check misses '$want': $left"; fi
done
if out=$(bash "$ROOT/hack/cluster/down.sh" 2>&1); then ok "down.sh passes after a teardown: $(tail -1 <<<"$out" | cut -c10-)"; else fail "down.sh failed: $out"; fi
for p in $pids; do
  if gone "$p"; then ok "process $p killed"; else fail "process $p lives: $(describe "$p")"; fi
done
if [ -z "$(kubepods_cgroups)" ]; then ok "the $KUBEPODS cgroups are removed"; else fail "cgroups left: $(kubepods_cgroups)"; fi
if ! grep -q " $STATE/" /proc/self/mounts; then ok "the mounts are removed"; else fail "mounts left: $(grep " $STATE/" /proc/self/mounts)"; fi
if [ ! -e "/run/netns/$NETNS" ]; then ok "the namespace is removed"; else fail "the namespace is left"; fi

echo "== teardown fails, naming it, when something stays"
# A process teardown must not kill (the one running it) in a pod cgroup:
# the process and its cgroup stay, so down.sh must fail and name both.
host_state > "$STATE/host-before.txt"
for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
  [ -f "$h/cgroup.procs" ] && [ "${h##*/}" != cpuset ] && mkdir -p "$h/$KUBEPODS/stuck"
done
out=$(for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
        [ -d "$h/$KUBEPODS/stuck" ] && { echo "$BASHPID" > "$h/$KUBEPODS/stuck/cgroup.procs"; } 2>/dev/null
      done
      exec bash "$ROOT/hack/cluster/down.sh" 2>&1)
status=$?
if [ $status -ne 0 ] && grep -q "left behind" <<<"$out" && grep -q "in a $KUBEPODS cgroup" <<<"$out" && grep -q "cgroup .*/$KUBEPODS/stuck" <<<"$out"; then
  ok "down.sh fails and names the process and the cgroup left: $(grep -m1 "in a $KUBEPODS cgroup" <<<"$out" | sed 's/^ *//')"
else
  fail "down.sh did not fail as it should (exit $status): $out"
fi
if bash "$ROOT/hack/cluster/down.sh" >/dev/null 2>&1 && [ -z "$(kubepods_cgroups)" ]; then ok "down.sh passes once it is gone"; else fail "the stuck cgroup could not be removed"; fi

if [ "$(host_state)" != "$before" ]; then fail "the host changed: $(diff <(host_state) <(echo "$before"))"; else ok "the host is unchanged"; fi
echo "guards: $passes passed, $fails failed"
exit $fails
