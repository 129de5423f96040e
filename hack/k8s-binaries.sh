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

# The whole script is one function, read before it runs, and the line that
# calls it also exits, so that editing the file during a long build cannot
# break the build in progress (bash would otherwise read on from its old
# offset in the changed file once main returns).
main() {

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
dir=$BINDIR
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

for c in "${missing[@]}"; do
  case "$c" in
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl|containerd|ctr|containerd-shim-runc-v2|coredns) ;;
    *) echo "unknown component $c (known: ${all[*]})" >&2; exit 2 ;;
  esac
done

echo "building ${missing[*]} ($K8S_VERSION, etcd $ETCD_VERSION) into $dir" >&2
echo "all of them: 15–35 minutes on 2 cores (cold); etcd + kube-apiserver alone: 5–15; later runs reuse the binaries" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
beat=
# A failed build must not leave its heartbeat printing forever.
# An interrupted one must not leave its half-built directory (bash runs the
# EXIT trap on a signal only when that signal is trapped).
trap 'if [ -n "$beat" ]; then kill "$beat" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
start=$(date +%s)
# --version says what was built (else v0.0.0-master); major and minor come
# from the one version in hack/versions.sh.
IFS=. read -r major minor _ <<<"${K8S_VERSION#v}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
n=0
for c in "${missing[@]}"; do
  n=$((n + 1))
  t0=$(date +%s)
  echo "  [$n/${#missing[@]}] $c ... (elapsed $(( t0 - start ))s)" >&2
  # A heartbeat, so that a person sees which step is alive and how long it takes.
  ( while sleep 60; do echo "  [$n/${#missing[@]}] still building $c: $(( $(date +%s) - t0 ))s" >&2; done ) &
  beat=$!
  case "$c" in
    etcd)
      (cd "$root/hack/tools/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) ;;
    kube-*|kubelet|kubectl)
      (cd "$root/hack/tools/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c") ;;
    containerd|ctr|containerd-shim-runc-v2)
      # containerd v2 (Debian's 1.6 lacks the CRI RuntimeConfig call kubelet 1.37 makes).
      (cd "$root/hack/tools/containerd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -tags no_btrfs,no_devmapper,no_zfs -o "$tmp/$c" "github.com/containerd/containerd/v2/cmd/$c") ;;
    coredns)
      (cd "$root/hack/tools/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns) ;;
  esac
  kill "$beat" 2>/dev/null || true
  # Each binary lands as soon as it is built: an interrupted build keeps it.
  mv "$tmp/$c" "$dir/$c"
  echo "  [$n/${#missing[@]}] $c built in $(( $(date +%s) - t0 ))s" >&2
done
echo "built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
echo "$dir"
}
main "$@"; exit
