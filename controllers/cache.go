package controllers

import (
	"context"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
		// The TLS and client Secrets (kvv1.ChildMeta).
		&corev1.Secret{}: {Label: managedBySelector()},
		// The CA bundle and the access rules (clientaccess).
		&corev1.ConfigMap{}: {Label: managedBySelector()},
		// spec.networkPolicy's.
		&networkingv1.NetworkPolicy{}: {Label: managedBySelector()},
		// The kvnode pods (the StatefulSet's and the Deployment's
		// template carries kvv1.Labels). A Job's pods are listed around
		// the cache (jobPods).
		&corev1.Pod{}: {Label: managedBySelector()},
		// The Deployments of stores whose log is in PostgreSQL: a cluster
		// runs many Deployments, and the operator's are few. One of a
		// store's name that the operator did not make is read around the
		// cache (observeDeployment).
		&appsv1.Deployment{}: {Label: managedBySelector()},
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

// cacheThenAPI reads from the cache, and around it when the cache has no
// such object. The cache holds only what the operator labelled; an object
// of the same name that it did not make (a user's Secret or ConfigMap)
// must still be seen, so that it is reported and not taken over by an
// apply. Objects of the operator's are found in the cache, so the API
// server is asked only about names the cache does not know.
type cacheThenAPI struct{ cached, api client.Reader }

func (c cacheThenAPI) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := c.cached.Get(ctx, key, obj, opts...)
	if apierrors.IsNotFound(err) && c.api != nil {
		return c.api.Get(ctx, key, obj, opts...)
	}
	return err
}

func (c cacheThenAPI) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.cached.List(ctx, list, opts...)
}
