// Package podmonitor builds the Prometheus Operator PodMonitor that
// scrapes a store's kvnode metrics. It is an unstructured object: the
// operator must run, and build, without the Prometheus Operator's Go
// module or CRDs, and creates the PodMonitor only where the API exists.
package podmonitor

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/tlssecrets"
)

// GVK is the kind the Prometheus Operator serves.
var GVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}

// StoreLabel is the label every kvnode series carries the store's name
// in, so that the rules in config/monitoring can group by store.
const StoreLabel = "store"

// Build returns the desired PodMonitor. kvnode serves /metrics on its API
// port over TLS and asks no client certificate there, so Prometheus only
// needs to trust the store's CA and verify a name the server certificate
// covers (it scrapes pod IPs).
func Build(kvs *kvv1.KeyValueStore) (*unstructured.Unstructured, error) {
	meta := kvv1.ChildMeta(kvs, kvv1.PodMonitorName(kvs))
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&meta)
	if err != nil {
		return nil, err
	}
	delete(m, "creationTimestamp")
	selector := map[string]any{}
	for k, v := range kvv1.SelectorLabels(kvs) {
		selector[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": m,
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": selector},
			"podMetricsEndpoints": []any{map[string]any{
				"port":   "api",
				"path":   "/metrics",
				"scheme": "https",
				"tlsConfig": map[string]any{
					"ca":         caRef(kvs),
					"serverName": fmt.Sprintf("%s.%s.svc", kvv1.ClientServiceName(kvs), kvs.Namespace),
				},
				"relabelings": []any{map[string]any{
					"sourceLabels": []any{"__meta_kubernetes_pod_label_app_kubernetes_io_instance"},
					"targetLabel":  StoreLabel,
				}},
			}},
		},
	}}
	u.SetGroupVersionKind(GVK)
	return u, nil
}

// caRef points at the store's CA certificate: the ConfigMap of the
// operator's CA, or, for a Secret the user provides, its ca.crt (there is
// no operator CA then).
func caRef(kvs *kvv1.KeyValueStore) map[string]any {
	if s := kvs.Spec.TLS.SecretName; s != nil && *s != "" {
		return map[string]any{"secret": map[string]any{"name": *s, "key": tlssecrets.CACert}}
	}
	return map[string]any{"configMap": map[string]any{"name": kvv1.CAConfigMapName(kvs), "key": tlssecrets.CACert}}
}
