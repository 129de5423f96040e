#!/usr/bin/env bash
# Builds a server or tool the tests need from the Go module proxy into a
# cache directory keyed on its version, once, and prints the directory on
# the last line of stdout:
#
#   weed      SeaweedFS's S3-compatible server (the backup tests and the
#             local cluster; MinIO's server is AGPL and is not used)
#   promtool  Prometheus's rule checker (make test checks and unit-tests
#             the alerting rules in config/monitoring)
#   helm      Helm (make test lints and renders charts/kvstore-operator)
#
# Each has a tools module under hack/tools that pins its version (the
# SeaweedFS one also repeats the replace directive of SeaweedFS's own
# go.mod: replace directives are not inherited); hack/versions.sh names
# the versions and the directories.
set -euo pipefail

main() {
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
case "${1:-}" in
  weed) dir=$SEAWEEDFS_DIR module=seaweedfs pkg=github.com/seaweedfs/seaweedfs/weed what="SeaweedFS $SEAWEEDFS_VERSION" cold="5–20" ;;
  promtool) dir=$PROMTOOL_DIR module=promtool pkg=github.com/prometheus/prometheus/cmd/promtool what="Prometheus $PROMETHEUS_VERSION" cold="15–60" ;;
  helm) dir=$HELM_DIR module=helm pkg=helm.sh/helm/v3/cmd/helm what="Helm $HELM_VERSION" cold="5–30" ;;
  *) echo "usage: hack/tool.sh weed|promtool|helm" >&2; exit 2 ;;
esac
name=$1
if [ -x "$dir/$name" ]; then
  echo "$name ($what) already built in $dir" >&2
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
echo "building $name ($what) into $dir: $cold minutes on 2 cores (cold); later runs reuse it" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
beat=
trap 'if [ -n "$beat" ]; then kill "$beat" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
t0=$(date +%s)
( while sleep 60; do echo "  still building $name: $(( $(date +%s) - t0 ))s" >&2; done ) &
beat=$!
(cd "$root/hack/tools/$module" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/$name" "$pkg")
mv "$tmp/$name" "$dir/$name"
echo "built $name in $(( $(date +%s) - t0 ))s" >&2
echo "$dir"
}
main "$@"; exit
