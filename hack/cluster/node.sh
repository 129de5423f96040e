#!/usr/bin/env bash
# Runs inside the network namespace (up.sh starts it with nsenter): starts
# every component in the background and waits until the node is Ready.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
STATE=${STATE:?} BINDIR=${BINDIR:?}

# Refuse to run anywhere but inside $NETNS.
[ "$(stat -L -c %i /proc/self/ns/net)" = "$(stat -L -c %i "/run/netns/$NETNS")" ] || die "not inside network namespace $NETNS"
if ip route show table all | grep '^default' >/dev/null; then die "a default route is present: refusing to start"; fi
ip -o addr show dev lo | grep "inet $NODE_IP/" >/dev/null || die "the node address is not on lo"

# No go here: this namespace has no route out, so a go command could not
# download a module. up.sh builds every tool on the host first
# (hack/build-helpers.sh); an accidental call fails at once, by name.
go() { die "node.sh must not run go (inside $NETNS, no module can be downloaded): build it on the host in hack/build-helpers.sh"; }

# Every component runs with the state directory as its working directory,
# so that teardown finds it even without its pid file.
cd "$STATE"
PKI="$STATE/pki"
start() { # name, then the command
  local name=$1; shift
  say "starting $name (log: $STATE/logs/$name.log)"
  nohup "$@" > "$STATE/logs/$name.log" 2>&1 &
  echo $! > "$STATE/pids/$name"
}
wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 > secs )); then die "timed out after ${secs}s waiting for $what"; fi
    sleep 0.5
  done
  say "$what: ok after $(( SECONDS - t0 ))s"
}
alive() { # fail fast when a component died
  local name=$1
  kill -0 "$(cat "$STATE/pids/$name")" 2>/dev/null || die "$name exited; see $STATE/logs/$name.log: $(tail -3 "$STATE/logs/$name.log")"
}
kubectl() { "$BINDIR/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

start etcd "$BINDIR/etcd" --name node --data-dir "$STATE/etcd" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster node=http://127.0.0.1:2380 --log-level warn
start kube-apiserver "$BINDIR/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --allow-privileged=true \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP
wait_for "kube-apiserver" 60 kubectl get --raw /readyz
alive kube-apiserver

start kube-controller-manager "$BINDIR/kube-controller-manager" --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --use-service-account-credentials=false --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --leader-elect=false \
  --enable-hostpath-provisioner
start kube-scheduler "$BINDIR/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" --leader-elect=false

mkdir -p "$STATE/containerd"
export PATH="$BINDIR:$PATH" # containerd finds containerd-shim-runc-v2 on PATH
start containerd "$BINDIR/containerd" --config "$STATE/containerd.toml"
wait_for "containerd" 30 "$BINDIR/ctr" --address "$STATE/containerd/containerd.sock" version
alive containerd
# up.sh packed the sandbox image on the host.
if ! "$BINDIR/ctr" --address "$STATE/containerd/containerd.sock" -n k8s.io images ls -q | grep 'registry.k8s.io/pause:3.10' >/dev/null; then
  say "importing the pause image"
  "$BINDIR/ctr" --address "$STATE/containerd/containerd.sock" -n k8s.io images import "$STATE/pause.tar" >&2
fi

start kubelet "$BINDIR/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki"
start kube-proxy "$BINDIR/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" --hostname-override="$NODE_NAME" \
  --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --conntrack-max-per-core=0
start coredns "$BINDIR/coredns" -conf "$STATE/Corefile"
# The hostPath provisioner makes root-owned directories and hostPath
# volumes ignore fsGroup: open new ones to the pods' non-root users, as a
# real storage driver's fsGroup support would.
# shellcheck disable=SC2016 # $0 is expanded by the inner bash
start volume-permissions bash -c 'while sleep 0.2; do find "$0" -mindepth 1 -maxdepth 1 -type d ! -perm -0777 -exec chmod 0777 {} + 2>/dev/null; done' "$HOSTPATH_PV"
node_ready() { kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep True >/dev/null; }
wait_for "node $NODE_NAME Ready" 120 node_ready
for c in kube-controller-manager kube-scheduler kubelet kube-proxy coredns volume-permissions; do alive "$c"; done
# Volumes: the controller manager's hostPath provisioner (a single node
# needs no more), as the default StorageClass.
kubectl apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
say "cluster up: hack/kubectl get nodes"
