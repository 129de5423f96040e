#!/usr/bin/env bash
# Builds Kubernetes components from the Go module proxy into a cache
# directory keyed on the version, and never rebuilds a binary that is
# already there. Prints the directory on the last line of stdout.
#
#   hack/k8s-binaries.sh etcd kube-apiserver           # envtest assets
#   hack/k8s-binaries.sh all                           # every component of a node
#
# The tools module hack/tools/k8s pins k8s.io/kubernetes and etcd (its
# replace block maps the staging modules to their released versions).
set -euo pipefail

# The whole script is one function, read before it runs, so that editing
# the file during a long build cannot break the build in progress.
main() {

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kvstore-operator}
dir="$cache/k8s-$K8S_VERSION"
mkdir -p "$dir"

all=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl containerd ctr containerd-shim-runc-v2 coredns)
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(etcd kube-apiserver)
[ "${want[0]}" = all ] && want=("${all[@]}")

missing=()
for c in "${want[@]}"; do
  [ -x "$dir/$c" ] || missing+=("$c")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "all of ${want[*]} already built in $dir" >&2
  echo "$dir"
  exit 0
fi

pkgs=()
others=()
for c in "${missing[@]}"; do
  case "$c" in
    etcd) pkgs+=(go.etcd.io/etcd/server/v3) ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl) pkgs+=("k8s.io/kubernetes/cmd/$c") ;;
    containerd|ctr|containerd-shim-runc-v2|coredns) others+=("$c") ;;
    *) echo "unknown component $c (known: ${all[*]})" >&2; exit 2 ;;
  esac
done

echo "building ${missing[*]} ($K8S_VERSION, etcd $ETCD_VERSION) into $dir" >&2
echo "a cold build takes minutes (etcd + kube-apiserver about 6 min on 2 cores); later runs reuse the binaries" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
(
  # A heartbeat, so that a person sees the build is alive.
  ( while sleep 30; do echo "  still building... $(( $(date +%s) - start ))s" >&2; done ) &
  beat=$!
  trap 'kill $beat 2>/dev/null' EXIT
  if [ ${#pkgs[@]} -gt 0 ]; then
    cd "$root/hack/tools/k8s"
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
  fi
  for c in "${others[@]}"; do
    case "$c" in
      containerd|ctr|containerd-shim-runc-v2)
        # containerd v2.4.2 (Debian's 1.6 lacks the CRI RuntimeConfig call kubelet 1.37 makes).
        cd "$root/hack/tools/containerd"
        CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -tags no_btrfs,no_devmapper,no_zfs -o "$tmp/$c" "github.com/containerd/containerd/v2/cmd/$c" ;;
      coredns)
        cd "$root/hack/tools/coredns"
        CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns ;;
    esac
  done
)
[ -e "$tmp/server" ] && mv "$tmp/server" "$tmp/etcd"   # etcd's main package is named server
for c in "${missing[@]}"; do
  mv "$tmp/$c" "$dir/$c"
done
echo "built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
echo "$dir"
}
main "$@"
