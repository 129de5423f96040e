package controllers

import (
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// CacheOptions are the manager's cache: only the objects of the kinds
// below that the operator made are held, so that memory follows the
// number of stores, not the size of the cluster (300 unrelated 256 KiB
// Secrets cost every operator that caches all Secrets about 80 MB, see
// docs/benchmarks.md). namespaces, when not empty, are the only ones
// watched (a namespace-scoped install).
//
// What is read that the operator did not make, or did not always label,
// goes around the cache (the reconcilers' APIReader): a user's TLS
// Secrets, Nodes and PersistentVolumes, the pods of a backup or restore
// Job.
func CacheOptions(namespaces []string) cache.Options {
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		// The TLS Secrets (kvv1.ChildMeta).
		&corev1.Secret{}: {Label: managedBySelector()},
		// The kvnode pods (the StatefulSet's template carries
		// kvv1.Labels). A Job's pods are listed around the cache
		// (jobPods).
		&corev1.Pod{}: {Label: managedBySelector()},
		// The backup and restore Jobs. Selected by the store label they
		// have always carried, so that Jobs made by an earlier version are
		// still seen.
		&batchv1.Job{}: {Label: labels.NewSelector().Add(exists(kvv1.LabelBackupStore))},
		// The pods' data claims, made by the StatefulSet from its claim
		// template, or by the restore (ensureDataClaim) with the same
		// labels.
		&corev1.PersistentVolumeClaim{}: {Label: labels.SelectorFromSet(labels.Set{kvv1.LabelName: kvv1.LabelNameKVNode})},
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// WatchNamespaces parses WATCH_NAMESPACE: a comma-separated list of
// namespaces; empty means all.
func WatchNamespaces(env string) []string {
	var out []string
	for ns := range strings.SplitSeq(env, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

func managedBySelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{kvv1.LabelManagedBy: kvv1.ManagedBy})
}

func exists(key string) labels.Requirement {
	r, err := labels.NewRequirement(key, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant key: only a typo gets here
	}
	return *r
}
