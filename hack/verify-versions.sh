#!/usr/bin/env bash
# Part of `make verify`: hack/versions.sh is the one place for the
# Kubernetes and etcd versions (and the tools built like them). Fails when the tools module that builds
# them (hack/tools/k8s) pins other versions, or when a file other than
# versions.sh, a go.mod/go.sum or the documentation spells the version out.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/versions.sh
source hack/versions.sh
bad=0
mod=hack/tools/k8s/go.mod
grep -qE "^[[:space:]]*k8s.io/kubernetes $K8S_VERSION( |$)" "$mod" ||
  { echo "$mod does not require k8s.io/kubernetes $K8S_VERSION (hack/versions.sh)" >&2; bad=1; }
grep -qE "^[[:space:]]*go.etcd.io/etcd/server/v3 $ETCD_VERSION( |$)" "$mod" ||
  { echo "$mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION (hack/versions.sh)" >&2; bad=1; }
# The staging modules are released as v0.<minor>.<patch> of v1.<minor>.<patch>.
staging=v0.${K8S_VERSION#v*.}
if other=$(grep -E '^[[:space:]]*k8s.io/[^ ]+ => k8s.io/[^ ]+ v' "$mod" | grep -v " $staging$"); then
  echo "$mod replaces staging modules with other versions than $staging:" >&2; echo "$other" >&2; bad=1
fi
if hits=$(git grep -n -F "$K8S_VERSION" -- . ':!hack/versions.sh' ':!*go.mod' ':!*go.sum' ':!*.md'); then
  echo "the Kubernetes version is spelled out here; use K8S_VERSION from hack/versions.sh:" >&2; echo "$hits" >&2; bad=1
fi
smod=hack/tools/seaweedfs/go.mod
grep -qE "^[[:space:]]*github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION( |$)" "$smod" ||
  { echo "$smod does not require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION (hack/versions.sh)" >&2; bad=1; }
pmod=hack/tools/promtool/go.mod
grep -qE "^[[:space:]]*github.com/prometheus/prometheus $PROMETHEUS_VERSION( |$)" "$pmod" ||
  { echo "$pmod does not require github.com/prometheus/prometheus $PROMETHEUS_VERSION (hack/versions.sh)" >&2; bad=1; }
hmod=hack/tools/helm/go.mod
grep -qE "^[[:space:]]*helm.sh/helm/v3 $HELM_VERSION( |$)" "$hmod" ||
  { echo "$hmod does not require helm.sh/helm/v3 $HELM_VERSION (hack/versions.sh)" >&2; bad=1; }
[ "$bad" = 0 ] || exit 1
echo "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, SeaweedFS $SEAWEEDFS_VERSION, Prometheus $PROMETHEUS_VERSION and Helm $HELM_VERSION: one place (hack/versions.sh), matching $mod, $smod, $pmod and $hmod"
