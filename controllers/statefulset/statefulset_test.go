package statefulset

import (
	appsv1 "k8s.io/api/apps/v1"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestBuild(t *testing.T) {
	testutil.Golden(t, "default", Build(testutil.StoredKVS("demo"), ptr.To[int32](3)))
	testutil.Golden(t, "autoscaled-scheduling", Build(testutil.StoredKVS("demo", testutil.WithAutoscaling(3, 7), func(k *kvv1.KeyValueStore) {
		k.Spec.Storage.StorageClassName = ptr.To("fast")
		k.Spec.Storage.Size = ptr.To(resource.MustParse("10Gi"))
		k.Spec.NodeSelector = map[string]string{"disk": "ssd"}
		k.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "kv", Effect: corev1.TaintEffectNoSchedule}}
		k.Spec.PodLabels = map[string]string{"team": "storage", "app.kubernetes.io/name": "ignored"}
		k.Spec.PodAnnotations = map[string]string{"prometheus.io/scrape": "true"}
	}), nil))
}

func TestBuildSecurity(t *testing.T) {
	sts := Build(testutil.StoredKVS("demo"), ptr.To[int32](3))
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	if !*pod.SecurityContext.RunAsNonRoot || !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Fatal("kvnode must run as non-root on a read-only root filesystem")
	}
	if sts.Spec.Template.Labels["app.kubernetes.io/name"] != "kvnode" {
		t.Fatal("a pod label from the spec overrode the selector")
	}
	if c.StartupProbe == nil || c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatal("probes")
	}
}

func TestBuildClientAuth(t *testing.T) {
	k := testutil.StoredKVS("demo")
	k.Status.ClientAuth = kvv1.ClientAuthMTLS
	testutil.Golden(t, "mtls", Build(k, ptr.To[int32](3)))
}

// What an unset spec.clientAuth means: mtls for a new store, and for a
// running one what its pods run.
func TestClientAuthOfAStore(t *testing.T) {
	mtls := testutil.StoredKVS("demo")
	mtls.Status.ClientAuth = kvv1.ClientAuthMTLS
	runningMTLS, runningNone := Build(mtls, ptr.To[int32](3)), Build(testutil.StoredKVS("demo"), ptr.To[int32](3))
	for _, c := range []struct {
		name string
		spec string
		live *appsv1.StatefulSet
		want string
	}{
		{"a new store", "", nil, kvv1.ClientAuthMTLS},
		{"a store that runs mtls", "", runningMTLS, kvv1.ClientAuthMTLS},
		{"a store that runs without", "", runningNone, kvv1.ClientAuthNone},
		{"spec none wins", kvv1.ClientAuthNone, runningMTLS, kvv1.ClientAuthNone},
		{"spec mtls wins", kvv1.ClientAuthMTLS, runningNone, kvv1.ClientAuthMTLS},
		{"spec none, new", kvv1.ClientAuthNone, nil, kvv1.ClientAuthNone},
	} {
		k := testutil.StoredKVS("demo")
		k.Spec.ClientAuth = c.spec
		if got := ClientAuth(k, c.live); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
