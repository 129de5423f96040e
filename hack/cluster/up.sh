#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster inside the network namespace
# kvtest: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd with runc, kubelet, kube-proxy, the bridge CNI and CoreDNS.
# `make cluster-up`; `make cluster-down` stops it and restores the host.
#
# Everything that needs the network happens first, on the host: the Debian
# packages, the Kubernetes binaries, the helper tools and the pause image.
# Only then is the namespace created; it has no route out, and nothing
# started in it downloads anything.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, containerd, kubelet)"
if [ -e "/run/netns/$NETNS" ]; then die "namespace $NETNS exists: a cluster is up or was not torn down (make cluster-down)"; fi
"$ROOT/hack/deps.sh" cluster

say "Kubernetes binaries (built once into $BINDIR; 15–35 minutes on 2 cores (cold))"
"$ROOT/hack/k8s-binaries.sh" all >/dev/null || die "building the Kubernetes binaries failed"
say "building the helper tools on the host (hack/build-helpers.sh: pause, image-packer, localk8s)"
"$ROOT/hack/build-helpers.sh" pause image-packer localk8s || die "building the helper tools failed"

mkdir -p "$STATE"/{logs,pids}
host_state > "$STATE/host-before.txt"
if [ ! -f "$STATE/pki/ca.crt" ]; then
  say "writing the PKI and configurations"
  "$HELPERS/localk8s" -dir "$STATE" -node-ip "$NODE_IP" -node-name "$NODE_NAME" -pod-cidr "$POD_CIDR" >&2
fi
# The pods' sandbox image: no registry to pull it from, so pack our own
# (node.sh imports it into containerd).
"$HELPERS/image-packer" -binary "$HELPERS/pause" -tag registry.k8s.io/pause:3.10 -out "$STATE/pause.tar" -dirs "" -env "" -ports "" >&2

say "creating network namespace $NETNS (node address $NODE_IP, no route out)"
ip netns add "$NETNS"
in_ns ip link set lo up
in_ns ip addr add "$NODE_IP/32" dev lo
# Locally generated packets to a ClusterIP are routed before kube-proxy's
# DNAT: give the service range a route that stays inside the namespace.
in_ns ip route add "$SERVICE_CIDR" dev lo src "$NODE_IP"
check_ns

in_ns env STATE="$STATE" BINDIR="$BINDIR" bash "$ROOT/hack/cluster/node.sh"
