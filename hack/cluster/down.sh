#!/usr/bin/env bash
# Stops the local cluster and leaves the host as it was: processes by PID,
# pod containers, mounts under the state directory, kubepods cgroups, then
# the network namespace with everything in it (cni0, veths, iptables).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

for name in volume-permissions kube-proxy kubelet coredns kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
  f="$STATE/pids/$name"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done
# Container processes (shims and what runs under them).
pkill -9 -f "containerd-shim-runc-v2 .*-address $STATE/" 2>/dev/null || true
for pid in $(pgrep -f containerd-shim-runc-v2 || true); do
  if grep -qs "$STATE" /proc/$pid/cmdline; then kill -9 "$pid" 2>/dev/null || true; fi
done
# Mounts kubelet and containerd made under the state directory, deepest first.
grep " $STATE" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
# The pods' cgroups.
for d in /sys/fs/cgroup/*/kubepods; do
  [ -d "$d" ] || continue
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done
if [ -e /run/netns/$NETNS ]; then ip netns del $NETNS; fi
# A fresh cluster next time: drop the data, keep the PKI and the configurations.
rm -rf "$STATE"/{etcd,kubelet,containerd,cni/ipam,logs,pids} /tmp/hostpath_pv
if [ -f "$STATE/host-before.txt" ]; then
  if diff <(host_state) "$STATE/host-before.txt" > "$STATE/host-diff.txt"; then
    say "cluster down; the host's links, addresses, routes and iptables are as before"
  else
    say "WARNING: the host differs from before the cluster started:"; cat "$STATE/host-diff.txt" >&2; exit 1
  fi
else
  say "cluster down"
fi
