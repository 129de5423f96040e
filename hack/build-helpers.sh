#!/usr/bin/env bash
# Builds the project's helper tools on the host into bin/:
#
#   pause         the pods' sandbox process (hack/pause, main module)
#   image-packer  packs a static binary into an image tarball (hack/image,
#                 its own module: github.com/google/go-containerregistry)
#   localk8s      writes the local cluster's PKI and configurations
#                 (hack/localk8s, main module)
#
#   hack/build-helpers.sh                 # all three
#   hack/build-helpers.sh image-packer    # just the packer (make image)
#
# Why a separate step: the local cluster runs in a network namespace with
# no route out, so a `go build` or `go run` started inside it cannot
# download a module (it only seems to work where the module cache happens
# to be warm). hack/cluster/up.sh runs this before anything enters the
# namespace, and only the built binaries are used after.
#
# KV_TOOLS_GOMODCACHE, when set, is the module cache for these builds. CI
# sets it to an empty directory, so every module they need is downloaded
# from the proxy here, on the host, during the run (see .ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/bin
mkdir -p "$out"

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(pause image-packer localk8s)
if [ -n "${KV_TOOLS_GOMODCACHE:-}" ]; then export GOMODCACHE=$KV_TOOLS_GOMODCACHE; fi

# go build is incremental: a tool that is up to date takes a second.
for t in "${tools[@]}"; do
  case "$t" in
    # Static: it is the only file of the sandbox image.
    pause) (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/pause" ./hack/pause) ;;
    image-packer) (cd "$root/hack/image" && CGO_ENABLED=0 go build -trimpath -o "$out/image-packer" .) ;;
    localk8s) (cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$out/localk8s" ./hack/localk8s) ;;
    *) echo "unknown helper $t (known: pause image-packer localk8s)" >&2; exit 2 ;;
  esac
done
