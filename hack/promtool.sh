#!/usr/bin/env bash
# Builds Prometheus's `promtool` (make test checks and unit-tests the
# alerting rules in config/monitoring with it) from the Go module proxy
# into a cache directory keyed on the version, once. Prints the directory
# on the last line of stdout.
#
# The tools module hack/tools/promtool pins the version.
set -euo pipefail

main() {
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
dir=$PROMTOOL_DIR
if [ -x "$dir/promtool" ]; then
  echo "promtool $PROMETHEUS_VERSION already built in $dir" >&2
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
echo "building promtool (Prometheus $PROMETHEUS_VERSION) into $dir: 3–10 minutes on 2 cores (cold); later runs reuse it" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
beat=
trap 'if [ -n "$beat" ]; then kill "$beat" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
t0=$(date +%s)
( while sleep 60; do echo "  still building promtool: $(( $(date +%s) - t0 ))s" >&2; done ) &
beat=$!
(cd "$root/hack/tools/promtool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool)
mv "$tmp/promtool" "$dir/promtool"
echo "built promtool in $(( $(date +%s) - t0 ))s" >&2
echo "$dir"
}
main "$@"; exit
