#!/usr/bin/env bash
# Stops the local cluster and leaves the host as it was: the components by
# PID, then every process the cluster left (the pods' /pause and container
# processes outlive containerd and its shims, reparented to init), the
# mounts under the state directory, the kubepods cgroups, and the network
# namespace with everything in it (cni0, veths, iptables). Then it checks:
# it fails, naming what is left, if any process, cgroup or mount of the
# cluster remains or the host's links, addresses, routes, iptables rules
# or mounts differ from before the cluster started.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root (like make cluster-up)"

# The components, gently first: kubelet stops restarting containers, etcd
# and containerd close their files.
for name in volume-permissions kube-proxy kubelet coredns kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
  f="$STATE/pids/$name"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done

# Everything else the cluster started, until none is left (up to 10 s).
# A frozen cgroup would hold SIGKILL back: thaw it first.
for root in $(kubepods_cgroups); do
  while read -r f; do
    case "$f" in
      */freezer.state) if grep -qE 'FROZEN|FREEZING' "$f"; then echo THAWED > "$f" || true; fi ;;
      */cgroup.freeze) echo 0 > "$f" || true ;;
    esac
  done < <(find "$root" \( -name freezer.state -o -name cgroup.freeze \) 2>/dev/null || true)
done
for round in $(seq 50); do
  pids=$(cluster_pids | sort -un)
  [ -n "$pids" ] || break
  if [ "$round" = 1 ]; then
    say "killing $(wc -w <<<"$pids") processes left by the cluster"
    for p in $pids; do if [ -e "/proc/$p" ]; then say "  $(describe "$p")"; fi; done
  fi
  # shellcheck disable=SC2086 # a list of PIDs
  kill -9 $pids 2>/dev/null || true
  sleep 0.2
done

# Mounts kubelet and containerd made under the state directory (volumes,
# overlay root filesystems, pod network namespaces), and the small tmpfs
# volumes the e2e tests mount on provisioned volumes, deepest first.
for _ in 1 2 3; do
  mounts=$(awk -v s="$STATE" -v h="$HOSTPATH_PV" '$2 == s || index($2, s "/") == 1 || index($2, h "/") == 1 {print $2}' /proc/self/mounts | sort -r)
  [ -n "$mounts" ] || break
  while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
done

# The pods' cgroups, deepest first (a cgroup can be removed only once it
# has no processes and no children; retry while the kernel reaps them).
for _ in $(seq 20); do
  dirs=$(for root in $(kubepods_cgroups); do find "$root" -depth -type d; done)
  [ -n "$dirs" ] || break
  while read -r d; do rmdir "$d" 2>/dev/null || true; done <<<"$dirs"
  [ -z "$(kubepods_cgroups)" ] || sleep 0.2
done

if [ -e "/run/netns/$NETNS" ]; then ip netns del "$NETNS"; fi
# A fresh cluster next time: drop the data, keep the PKI and the configurations.
rm -rf "${STATE:?}"/{etcd,kubelet,containerd,cni/ipam,logs,pids} "$HOSTPATH_PV"

left=$(leftovers)
if [ -n "$left" ]; then
  say "ERROR: the cluster left behind:"; while read -r l; do say "  $l"; done <<<"$left"
  exit 1
fi
if [ -f "$STATE/host-before.txt" ]; then
  if diff <(host_state) "$STATE/host-before.txt" > "$STATE/host-diff.txt"; then
    say "cluster down; no process, cgroup or mount of it is left; the host's links, addresses, routes, iptables rules and mounts are as before"
  else
    say "ERROR: the host differs from before the cluster started (< now, > before):"; cat "$STATE/host-diff.txt" >&2; exit 1
  fi
else
  say "cluster down; no process, cgroup or mount of it is left"
fi
