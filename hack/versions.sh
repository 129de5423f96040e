# shellcheck shell=bash
# The versions of the components the local cluster and the controller tests
# are built from (sourced by the scripts under hack/; the Makefile reads
# K8S_VERSION from here too). One place: change them here only.
# shellcheck disable=SC2034  # read by the scripts that source this file
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
# Where hack/k8s-binaries.sh keeps what it built, keyed on the version.
KV_CACHE=${KV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kvstore-operator}
BINDIR=$KV_CACHE/k8s-$K8S_VERSION
# The S3-compatible server the backup tests and the local cluster run
# (SeaweedFS publishes no module versions: a pseudo-version of its main
# branch). Built by hack/tool.sh from hack/tools/seaweedfs.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
SEAWEEDFS_DIR=$KV_CACHE/seaweedfs-$SEAWEEDFS_VERSION
# promtool checks and unit-tests the alerting rules (config/monitoring);
# built by hack/tool.sh from hack/tools/promtool.
PROMETHEUS_VERSION=v0.316.0
PROMTOOL_DIR=$KV_CACHE/promtool-$PROMETHEUS_VERSION
# helm lints and renders the chart (charts/kvstore-operator); built by
# hack/tool.sh from hack/tools/helm.
HELM_VERSION=v3.22.0
HELM_DIR=$KV_CACHE/helm-$HELM_VERSION
