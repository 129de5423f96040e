#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3-compatible server the backup tests and
# the local cluster use) from the Go module proxy into a cache directory
# keyed on the version, once. Prints the directory on the last line of
# stdout. MinIO's server is AGPL and is not used.
#
# The tools module hack/tools/seaweedfs pins the version and repeats the
# replace directive of SeaweedFS's own go.mod (replace directives are not
# inherited by a module that depends on it).
set -euo pipefail

main() {
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
dir=$SEAWEEDFS_DIR
if [ -x "$dir/weed" ]; then
  echo "weed $SEAWEEDFS_VERSION already built in $dir" >&2
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
echo "building weed (SeaweedFS $SEAWEEDFS_VERSION) into $dir: 5–20 minutes on 2 cores (cold); later runs reuse it" >&2
tmp=$(mktemp -d "$dir/.build.XXXXXX")
beat=
trap 'if [ -n "$beat" ]; then kill "$beat" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
t0=$(date +%s)
( while sleep 60; do echo "  still building weed: $(( $(date +%s) - t0 ))s" >&2; done ) &
beat=$!
(cd "$root/hack/tools/seaweedfs" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/weed" github.com/seaweedfs/seaweedfs/weed)
mv "$tmp/weed" "$dir/weed"
echo "built weed in $(( $(date +%s) - t0 ))s" >&2
echo "$dir"
}
main "$@"; exit
