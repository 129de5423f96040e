#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster inside the network namespace
# kvtest: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd with runc, kubelet, kube-proxy, the bridge CNI and CoreDNS.
# `make cluster-up`; `make cluster-down` stops it and restores the host.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, containerd, kubelet)"
for c in nsenter ip runc iptables conntrack; do command -v $c >/dev/null || die "$c is missing (Debian: runc containernetworking-plugins iptables conntrack)"; done
[ -x /usr/lib/cni/bridge ] || die "/usr/lib/cni/bridge is missing (Debian: containernetworking-plugins)"
say "Kubernetes binaries (built once into $BINDIR; a cold build takes about 10 minutes)"
"$ROOT/hack/k8s-binaries.sh" all >/dev/null || die "building the Kubernetes binaries failed"
if [ -e /run/netns/$NETNS ]; then die "namespace $NETNS exists: a cluster is up or was not torn down (make cluster-down)"; fi

mkdir -p "$STATE"/{logs,pids}
host_state > "$STATE/host-before.txt"
say "creating network namespace $NETNS (node address $NODE_IP, no route out)"
ip netns add $NETNS
in_ns ip link set lo up
in_ns ip addr add $NODE_IP/32 dev lo
# Locally generated packets to a ClusterIP are routed before kube-proxy's
# DNAT: give the service range a route that stays inside the namespace.
in_ns ip route add $SERVICE_CIDR dev lo src $NODE_IP
check_ns

if [ ! -f "$STATE/pki/ca.crt" ]; then
  say "writing the PKI and configurations"
  (cd "$ROOT" && go run ./hack/localk8s -dir "$STATE" -node-ip $NODE_IP -node-name $NODE_NAME -pod-cidr $POD_CIDR)
fi
in_ns env STATE="$STATE" BINDIR="$BINDIR" bash "$ROOT/hack/cluster/node.sh"
