#!/usr/bin/env bash
# Proves that the cluster scripts refuse to start anything when the
# network namespace is not as required: missing, with a default route,
# without the node address, or when run outside of it. Uses a namespace of
# its own and checks that the host is unchanged afterwards.
set -uo pipefail
export KV_NETNS=kvguard KV_CLUSTER_DIR=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap 'ip netns del $NETNS 2>/dev/null; rm -rf "$KV_CLUSTER_DIR"' EXIT
before=$(host_state)
fails=0 passes=0
expect_refusal() { # description, expected message, command...
  local what=$1 msg=$2; shift 2
  local out
  if out=$("$@" 2>&1); then
    echo "FAIL: $what: it started"; fails=$((fails+1)); return
  fi
  if ! grep -q "$msg" <<<"$out"; then
    echo "FAIL: $what: refused, but not with '$msg': $out"; fails=$((fails+1)); return
  fi
  echo "ok: $what: $(grep -o "ERROR: .*" <<<"$out" | head -1)"; passes=$((passes+1))
}
node() { STATE=$KV_CLUSTER_DIR BINDIR=/nonexistent bash "$ROOT/hack/cluster/node.sh"; }

expect_refusal "namespace missing" "namespace $NETNS is missing" check_ns
expect_refusal "node.sh outside the namespace" "not inside network namespace" node

ip netns add $NETNS
in_ns ip link set lo up
expect_refusal "no node address" "node address" check_ns
in_ns ip addr add $NODE_IP/32 dev lo
in_ns ip route add default dev lo
expect_refusal "a default route" "default route" check_ns
expect_refusal "node.sh with a default route" "default route" in_ns env STATE=$KV_CLUSTER_DIR BINDIR=/nonexistent bash "$ROOT/hack/cluster/node.sh"
in_ns ip route del default dev lo
in_ns ip -6 route add default dev lo 2>/dev/null && expect_refusal "an IPv6 default route" "default route" check_ns
in_ns ip -6 route del default dev lo 2>/dev/null
if ( check_ns ) 2>/dev/null; then echo "ok: a correct namespace passes the checks"; passes=$((passes+1)); else echo "FAIL: a correct namespace is refused"; fails=$((fails+1)); fi

ip netns del $NETNS
if [ "$(host_state)" != "$before" ]; then echo "FAIL: the host changed"; fails=$((fails+1)); else echo "ok: the host is unchanged"; passes=$((passes+1)); fi
echo "guards: $passes passed, $fails failed"
exit $fails
