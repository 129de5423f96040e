#!/usr/bin/env bash
# Builds Helm's `helm` (make test lints and renders the chart in
# charts/kvstore-operator with it) from the Go module proxy
# into a cache directory keyed on the version, once. Prints the directory
# on the last line of stdout.
#
# The tools module hack/tools/helm pins the version.
set -euo pipefail

main() {
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
dir=$HELM_DIR
if [ -x "$dir/helm" ]; then
  echo "helm $HELM_VERSION already built in $dir" >&2
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
echo "building helm $HELM_VERSION into $dir: 3–10 minutes on 2 cores (cold); later runs reuse it" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
beat=
trap 'if [ -n "$beat" ]; then kill "$beat" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
t0=$(date +%s)
( while sleep 60; do echo "  still building helm: $(( $(date +%s) - t0 ))s" >&2; done ) &
beat=$!
(cd "$root/hack/tools/helm" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
mv "$tmp/helm" "$dir/helm"
echo "built helm in $(( $(date +%s) - t0 ))s" >&2
echo "$dir"
}
main "$@"; exit
