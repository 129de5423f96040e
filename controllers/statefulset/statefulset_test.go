package statefulset

import (
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
