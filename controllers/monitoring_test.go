package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/podmonitor"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestPodMonitorOnlyWithThePrometheusOperatorsAPI(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	if err := k8s.Create(ctx, testutil.NewKVS("demo", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, "demo", 3)
	waitStatus(t, ns, "demo", func(st kvv1.KeyValueStoreStatus) error {
		if !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("without the PodMonitor API the store is not ready: %+v", st.Conditions)
		}
		return nil
	})
	pm := &unstructured.Unstructured{}
	pm.SetGroupVersionKind(podmonitor.GVK)
	if err := get(t, ns, "demo", pm); !meta.IsNoMatchError(err) {
		t.Fatalf("the PodMonitor API exists before the test installs it: %v", err)
	}

	installPodMonitorCRD(t)
	// Any change reconciles at once; the periodic resync would take 30 s.
	if err := update(t, ns, "demo", func(k *kvv1.KeyValueStore) { k.Annotations = map[string]string{"touch": "1"} }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the PodMonitor", func() error {
		if err := get(t, ns, "demo", pm); err != nil {
			return err
		}
		sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
		if sel["app.kubernetes.io/instance"] != "demo" || sel["app.kubernetes.io/name"] != "kvnode" {
			return fmt.Errorf("selector %v", sel)
		}
		eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		if len(eps) != 1 {
			return fmt.Errorf("endpoints %v", eps)
		}
		ep := eps[0].(map[string]any)
		if ep["port"] != "api" || ep["scheme"] != "https" || ep["path"] != "/metrics" {
			return fmt.Errorf("endpoint %v", ep)
		}
		if refs := pm.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "KeyValueStore" || refs[0].Name != "demo" {
			return fmt.Errorf("owner references %v", refs)
		}
		return nil
	})

	if err := update(t, ns, "demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Monitoring = &kvv1.MonitoringSpec{Enabled: ptr.To(false)}
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the PodMonitor gone", func() error {
		if err := get(t, ns, "demo", pm); !apierrors.IsNotFound(err) {
			return fmt.Errorf("PodMonitor still there: %v", err)
		}
		return nil
	})
}

// installPodMonitorCRD installs testdata/podmonitor-crd.yaml until the
// test ends; the other tests run without it.
func installPodMonitorCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile("testdata/podmonitor-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &crd.Object); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, crd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
		// The tests after this one start without the API, as they would.
		testutil.Eventually(t, 60*time.Second, "the CRD deleted", func() error {
			if err := get(t, "", crd.GetName(), crd.DeepCopy()); !apierrors.IsNotFound(err) {
				return fmt.Errorf("CRD still there: %v", err)
			}
			return nil
		})
	})
	testutil.Eventually(t, 30*time.Second, "the CRD established", func() error {
		if err := get(t, "", crd.GetName(), crd); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if c := c.(map[string]any); c["type"] == "Established" && c["status"] == "True" {
				return nil
			}
		}
		return errors.New("not established")
	})
}
