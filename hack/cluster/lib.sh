# shellcheck shell=bash
# Shared settings of the local cluster scripts (sourced, not run).
# Everything runs inside the network namespace $NETNS, which has no route
# out: the node address lives on its loopback, pods sit on a bridge inside
# it, and nothing it sends can leave the machine.
# shellcheck disable=SC2034 # the settings are read by the scripts that source this file
NETNS=${KV_NETNS:-kvtest}
NODE_IP=10.200.0.1
SERVICE_CIDR=10.0.0.0/24
POD_CIDR=10.244.0.0/24
NODE_NAME=kvtest
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${KV_CLUSTER_DIR:-/var/tmp/kvstore-cluster}
# The helper tools hack/build-helpers.sh builds on the host.
HELPERS=$ROOT/bin
# kubelet (cgroupfs driver) puts every pod under /kubepods of each cgroup
# hierarchy. The variables exist so that test-guards.sh can rehearse a
# teardown on names of its own without touching a running cluster.
KUBEPODS=${KV_KUBEPODS_CGROUP:-kubepods}
# Where kube-controller-manager's hostPath provisioner makes the volumes
# (fixed in Kubernetes).
HOSTPATH_PV=${KV_HOSTPATH_DIR:-/tmp/hostpath_pv}
# hack/k8s-binaries.sh builds into $BINDIR (keyed on the version).
# shellcheck source=hack/versions.sh disable=SC2034
source "$ROOT/hack/versions.sh"

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# in_ns runs a command inside the namespace. Nothing there may download:
# GOPROXY=off turns any module fetch by a go command into an immediate
# error that names the module, instead of a DNS failure deep in a build,
# or a silent success on a machine whose module cache happens to be warm
# (which is how such a bug once passed CI). GOFLAGS=-mod=mod keeps a
# vendor directory from quietly standing in for the module cache. With
# KV_TOOLS_GOMODCACHE set (CI: a fresh, empty directory) that cache is the
# only one a go command inside could use.
in_ns() {
  nsenter --net="/run/netns/$NETNS" -- env GOPROXY=off GOFLAGS=-mod=mod \
    ${KV_TOOLS_GOMODCACHE:+GOMODCACHE="$KV_TOOLS_GOMODCACHE"} "$@"
}

# host_state prints the host's links, addresses, routes, iptables rules and
# mounts, to prove that the cluster leaves the host as it found it. Not
# compared: /run/netns, which `ip netns add` bind-mounts the first time and
# `ip netns del` leaves, and the namespaces' own nsfs mounts below it.
host_state() {
  { ip -o link show | sed -E 's/ +(state|qlen|link\/ether).*//' | sort; } || true
  { ip -o addr show | awk '{print $2, $3, $4}' | sort; } || true
  { ip route show table all | grep -v '^local\|^broadcast' | sort; } || true
  { ip -6 route show table all 2>/dev/null | grep -v '^local\|^multicast\|^anycast' | sort; } || true
  if command -v iptables-save >/dev/null; then { iptables-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//' | sort; } || true; fi
  awk '$2 != "/run/netns" && $2 !~ "^/run/netns/" {print "mount", $1, $2, $3}' /proc/self/mounts | sort
}

# check_ns aborts unless $NETNS exists, has no default route (IPv4 or IPv6,
# any table), only the expected links, and the node address on lo.
check_ns() {
  [ -e "/run/netns/$NETNS" ] || die "network namespace $NETNS is missing"
  # grep >/dev/null, not grep -q: with pipefail, grep -q quitting early can
  # fail the writer with SIGPIPE and so the whole check.
  if in_ns ip -4 route show table all | grep '^default' >/dev/null; then die "namespace $NETNS has a default route: refusing to start"; fi
  if in_ns ip -6 route show table all | grep '^default' >/dev/null; then die "namespace $NETNS has an IPv6 default route: refusing to start"; fi
  local links
  links=$(in_ns ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vE '^(lo|cni0|veth.*)$' || true)
  [ -z "$links" ] || die "namespace $NETNS has unexpected links: $links"
  in_ns ip -o addr show dev lo | grep "inet $NODE_IP/" >/dev/null || die "the node address $NODE_IP is not on lo inside $NETNS"
}

# kubepods_cgroups prints the pods' cgroup roots: /kubepods in each cgroup
# v1 hierarchy (and in a hybrid machine's unified one), or in the cgroup v2
# tree when that is mounted at /sys/fs/cgroup itself.
kubepods_cgroups() {
  local d
  for d in "/sys/fs/cgroup/$KUBEPODS" /sys/fs/cgroup/*/"$KUBEPODS"; do
    if [ -d "$d" ]; then echo "$d"; fi
  done
}

# cgroup_pids prints every process in the pods' cgroups. cgroup.procs is
# enough: it lists each process with any of its threads in the cgroup
# (v1 `tasks` would add only the threads, which die with their process).
cgroup_pids() {
  local root
  for root in $(kubepods_cgroups); do
    find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -un
}

# describe PID prints "PID (command line)".
describe() {
  local cmd
  cmd=$({ tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null) || true
  echo "$1 (${cmd% })"
}

# ours PID: true for this script, its ancestors (make, the shell that ran
# it, a user's shell sitting in the state directory) and its descendants,
# which teardown must never kill; also for a process that is already gone.
ours() {
  local p=$1
  while [ "$p" -gt 1 ]; do
    if [ "$p" = "$$" ]; then return 0; fi
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || return 0
    [ -n "$p" ] || return 0
  done
  p=$$
  while [ "$p" -gt 1 ]; do
    if [ "$p" = "$1" ]; then return 0; fi
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || return 1
    [ -n "$p" ] || return 1
  done
  [ -e "/proc/$1" ] || return 0
  return 1
}

# proc_links prints "PID exe|cwd TARGET" for every process (one find, not
# a readlink per process: teardown scans /proc many times).
proc_links() {
  # Processes come and go while find reads: its complaints are no news.
  { find /proc -mindepth 2 -maxdepth 2 \( -name exe -o -name cwd \) -printf '%h %f %l\n' 2>/dev/null || true; } |
    awk '$1 ~ /^\/proc\/[0-9]+$/ { sub(/^\/proc\//, "", $1); print $1, $2, $3 }'
}

# cluster_pids prints the processes the cluster left: everything in the
# pods' cgroups (the sandboxes' /pause and the containers, which outlive
# containerd and its shims), any process running a binary from $BINDIR
# (shims, components without a pid file), and any process whose working
# directory or a command-line argument (--flag=PATH too) is under the
# state directory. Not arguments under $BINDIR: a build writing there
# (hack/k8s-binaries.sh) is no part of the cluster.
cluster_pids() {
  local p re
  # shellcheck disable=SC2001 # escapes a character class: no ${//} equivalent
  re=$(sed 's/[].[*^$+?(){}|\\]/\\&/g' <<<"$STATE")
  {
    cgroup_pids
    proc_links | awk -v s="$STATE" -v b="$BINDIR" '
      function under(p, d) { return p == d || index(p, d "/") == 1 }
      ($2 == "exe" && (under($3, s) || under($3, b))) || ($2 == "cwd" && under($3, s)) { print $1 }'
    { grep -lsEz -- "^(--?[^=]*=)?$re(/|\$)" /proc/[0-9]*/cmdline || true; } | cut -d/ -f3
  } | sort -un | while read -r p; do
    if ! ours "$p"; then echo "$p"; fi
  done
}

# leftovers prints, one line each, what the cluster left on the host:
# processes in the pods' cgroups or running a binary from $BINDIR, the
# pods' cgroups themselves, and mounts under the state directory. Nothing
# when the host is clean.
leftovers() {
  local p d
  for p in $(cgroup_pids); do
    if [ -e "/proc/$p" ]; then echo "process $(describe "$p") in a $KUBEPODS cgroup"; fi
  done
  proc_links | awk -v b="$BINDIR" '$2 == "exe" && index($3, b "/") == 1 { print $1, $3 }' | while read -r p d; do
    echo "process $(describe "$p") runs $d"
  done
  for d in $(kubepods_cgroups); do
    find "$d" -depth -type d -printf 'cgroup %p\n'
  done
  awk -v s="$STATE" '$2 == s || index($2, s "/") == 1 {print "mount", $2, "(" $3 ")"}' /proc/self/mounts
}
