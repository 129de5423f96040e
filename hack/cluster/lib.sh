# Shared settings of the local cluster scripts (sourced, not run).
# Everything runs inside the network namespace $NETNS, which has no route
# out: the node address lives on its loopback, pods sit on a bridge inside
# it, and nothing it sends can leave the machine.
NETNS=${KV_NETNS:-kvtest}
NODE_IP=10.200.0.1
SERVICE_CIDR=10.0.0.0/24
POD_CIDR=10.244.0.0/24
NODE_NAME=kvtest
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${KV_CLUSTER_DIR:-/var/tmp/kvstore-cluster}
# hack/k8s-binaries.sh builds into $BINDIR (keyed on the version).
# shellcheck source=hack/versions.sh
source "$ROOT/hack/versions.sh"

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

in_ns() { nsenter --net=/run/netns/$NETNS -- "$@"; }

# host_state prints the host's links, addresses, routes and iptables rules,
# to prove that the cluster leaves the host as it found it.
host_state() {
  { ip -o link show | sed -E 's/ +(state|qlen|link\/ether).*//' | sort; } || true
  { ip -o addr show | awk '{print $2, $3, $4}' | sort; } || true
  { ip route show table all | grep -v '^local\|^broadcast' | sort; } || true
  { ip -6 route show table all 2>/dev/null | grep -v '^local\|^multicast\|^anycast' | sort; } || true
  if command -v iptables-save >/dev/null; then { iptables-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//' | sort; } || true; fi
}

# check_ns aborts unless $NETNS exists, has no default route (IPv4 or IPv6,
# any table), only the expected links, and the node address on lo.
check_ns() {
  [ -e /run/netns/$NETNS ] || die "network namespace $NETNS is missing"
  if in_ns ip route show table all | grep -q '^default'; then die "namespace $NETNS has a default route: refusing to start"; fi
  if in_ns ip -6 route show table all | grep -q '^default'; then die "namespace $NETNS has an IPv6 default route: refusing to start"; fi
  local links
  links=$(in_ns ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vE '^(lo|cni0|veth.*)$' || true)
  [ -z "$links" ] || die "namespace $NETNS has unexpected links: $links"
  in_ns ip -o addr show dev lo | grep -q "inet $NODE_IP/" || die "the node address $NODE_IP is not on lo inside $NETNS"
}
