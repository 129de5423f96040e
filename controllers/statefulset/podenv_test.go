package statefulset

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// A store stored before the CEL rule on spec.pod.env (such objects stay,
// and updates that leave spec.pod.env alone pass by ratcheting) may carry
// KV_GRPC_LISTEN: it does not override frontends.grpc.enabled=false, which
// the Services and the NetworkPolicy follow.
func TestStoredPodEnvDoesNotOverrideTheFrontends(t *testing.T) {
	kvs := testutil.StoredKVS("demo", func(k *kvv1.KeyValueStore) {
		k.Spec.Frontends = &kvv1.FrontendsSpec{GRPC: &kvv1.FrontendSpec{Enabled: ptr.To(false)}}
		k.Spec.Pod = &kvv1.PodOverrides{Env: []corev1.EnvVar{{Name: GRPCEnv, Value: ":50051"}}}
	})
	sts := Build(kvs, ptr.To[int32](3))
	effective := map[string]string{}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		effective[e.Name] = e.Value // the kubelet: the last one wins
	}
	if v := effective[GRPCEnv]; v != "" {
		t.Errorf("gRPC turned off, but the pods get %s=%q", GRPCEnv, v)
	}
}
