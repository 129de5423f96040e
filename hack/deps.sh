#!/usr/bin/env bash
# Installs the Debian packages the project's scripts need, and only those
# that are missing. The one list of them: hack/cluster/up.sh (make
# cluster-up, make demo), make verify and .ci/run all call this script.
#
#   hack/deps.sh cluster          # the local cluster
#   hack/deps.sh verify           # make verify and the tests (shellcheck, mkfs.ext4)
#   hack/deps.sh cluster verify   # both (CI)
#
# Needs root only when something is missing; without apt-get it names the
# missing packages and fails.
set -euo pipefail

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Each entry: what must be there (a command on PATH, or an absolute path
# that must be executable), then the Debian package that provides it.
cluster=(
  "nsenter util-linux"          # enters the network namespace
  "ip iproute2"                 # creates it
  "runc runc"                   # containerd's runtime (/usr/sbin/runc)
  "/usr/lib/cni/bridge containernetworking-plugins" # bridge, host-local, portmap
  "iptables iptables"           # kube-proxy; iptables-save for the host checks
  "conntrack conntrack"         # kube-proxy
  "curl curl"                   # hack/kv-curl
)
verify=(
  "shellcheck shellcheck"       # make verify lints every shell script
  "mkfs.ext4 e2fsprogs"         # the full-disk tests on an ext4 volume (test/tmpfs)
  "protoc protobuf-compiler"    # make generate: the gRPC API (kvnode/grpcapi)
  "/usr/lib/postgresql/*/bin/initdb postgresql" # the Postgres mode's tests start their own server (kvnode/pglog/pgtest)
)

[ $# -gt 0 ] || die "usage: $0 cluster|verify ..."
need=()
for group in "$@"; do
  case "$group" in
    cluster) entries=("${cluster[@]}") ;;
    verify) entries=("${verify[@]}") ;;
    *) die "unknown group $group (known: cluster verify)" ;;
  esac
  for e in "${entries[@]}"; do
    what=${e%% *} pkg=${e#* }
    if [[ $what == /* ]]; then
      # An absolute path may be a pattern (a versioned directory).
      for f in $what; do [ -x "$f" ] && continue 2; done
    else
      command -v "$what" >/dev/null && continue
    fi
    [[ " ${need[*]} " == *" $pkg "* ]] || need+=("$pkg")
  done
done
[ ${#need[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || die "missing: ${need[*]} (Debian package names; install them with your distribution's package manager)"
[ "$(id -u)" = 0 ] || die "missing Debian packages: ${need[*]} (as root: apt-get install ${need[*]})"
say "installing Debian packages: ${need[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Quiet unless it fails: then the whole apt output explains why.
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  die "installing ${need[*]} failed"
fi
