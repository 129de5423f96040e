//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// Growing spec.storage.size on the local cluster. Its host-path
// provisioner cannot grow a volume, so:
//   - with the cluster's class (no allowVolumeExpansion) the API server
//     refuses the claims' growth and the store says so;
//   - with a class that allows expansion the claims ask for the new size,
//     and the StatefulSet is re-created with it by the real garbage
//     collector and StatefulSet controller, without restarting a pod or
//     losing a write. The volumes themselves stay at their size, which
//     status shows as a resize in progress.
func TestVolumeGrowth(t *testing.T) {
	ns := freshNamespace(t, "e2e-volumes")
	defer dump(t, ns)
	apply(t, ns, `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: e2e-expandable
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
`)
	apply(t, ns, `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: fixed
spec:
  replicas: 1
  clients: [{name: e2e}]
---
apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: grow
spec:
  replicas: 3
  clients: [{name: e2e}]
  storage:
    storageClassName: e2e-expandable
`)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/fixed", "kvs/grow", "--timeout=180s")

	kubectl(t, "patch", "-n", ns, "kvs/fixed", "--type=merge", "-p", `{"spec":{"storage":{"size":"2Gi"}}}`)
	t.Logf("refused: %s", waitDegraded(t, ns, "fixed", "VolumeExpansionRefused", "data-fixed-0", 60*time.Second))

	c := client(t, ns, "grow")
	base := "https://grow." + ns + ".svc:8080/v1/key/"
	if code, body, err := do(c, "PUT", base+"before", "1"); err != nil || code != 201 {
		t.Fatalf("PUT: %d %q %v", code, body, err)
	}
	pods := podsOf(t, ns, "grow")
	stsUID := jsonpath(t, ns, "statefulset/grow", "{.metadata.uid}")
	kubectl(t, "patch", "-n", ns, "kvs/grow", "--type=merge", "-p", `{"spec":{"storage":{"size":"2Gi"}}}`)
	// Writes go on meanwhile.
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if code, body, err := do(c, "PUT", base+fmt.Sprintf("during-%d", i), "x"); err != nil || code != 201 {
				done <- fmt.Errorf("PUT during-%d: %d %q %v", i, code, body, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	testutil.Eventually(t, 120*time.Second, "claims at 2Gi and the StatefulSet made again", func() error {
		reqs := kubectl(t, "get", "pvc", "-n", ns, "-l", "app.kubernetes.io/instance=grow", "-o", "jsonpath={range .items[*]}{.spec.resources.requests.storage} {end}")
		if strings.TrimSpace(reqs) != "2Gi 2Gi 2Gi" {
			return fmt.Errorf("claim requests %q", reqs)
		}
		uid, _ := kubectlErr("get", "-n", ns, "statefulset/grow", "-o", "jsonpath={.metadata.uid}")
		tmpl, _ := kubectlErr("get", "-n", ns, "statefulset/grow", "-o", "jsonpath={.spec.volumeClaimTemplates[0].spec.resources.requests.storage}")
		if uid == "" || uid == stsUID || tmpl != "2Gi" {
			return fmt.Errorf("StatefulSet uid %q (was %q), template %q", uid, stsUID, tmpl)
		}
		return nil
	})
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/grow", "--timeout=60s")
	time.Sleep(3 * time.Second) // a while under the new StatefulSet
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := podsOf(t, ns, "grow"); after != pods {
		t.Fatalf("pods restarted: %s -> %s", pods, after)
	}
	owners := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=grow", "-o", "jsonpath={range .items[*]}{.metadata.ownerReferences[0].uid} {end}")
	if newUID := jsonpath(t, ns, "statefulset/grow", "{.metadata.uid}"); strings.Count(owners, newUID) != 3 {
		t.Fatalf("pods not adopted by the new StatefulSet %s: owners %q", newUID, owners)
	}
	if code, body, err := do(c, "GET", base+"before", ""); err != nil || code != 200 || body != "1" {
		t.Fatalf("GET after: %d %q %v", code, body, err)
	}
	if r := jsonpath(t, ns, "kvs/grow", "{.status.volumes.requested}"); r != "2Gi" {
		t.Fatalf("status.volumes.requested %q", r)
	}
	t.Logf("status.volumes: %s", jsonpath(t, ns, "kvs/grow", "{.status.volumes}"))
}

// podsOf lists the UIDs and restart counts of store's pods.
func podsOf(t *testing.T, ns, store string) string {
	return kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance="+store, "-o", "jsonpath={range .items[*]}{.metadata.uid}:{.status.containerStatuses[0].restartCount} {end}")
}
