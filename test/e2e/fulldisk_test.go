//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// mountTmpfs mounts a tmpfs of size on dir, in the host's mount namespace
// (the tests share it; only the network is the cluster's own), so that a
// provisioned hostPath volume has a size that can fill up and grow.
func mountTmpfs(t *testing.T, dir, size string, remount bool) {
	t.Helper()
	opts := "size=" + size + ",mode=0777"
	args := []string{"-t", "tmpfs", "-o", opts, "kv-e2e-volume", dir}
	if remount {
		args = []string{"-o", "remount," + opts, dir}
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v\n%s", args, err, out)
	}
}

// A store whose volumes fill up refuses writes with 507, keeps serving
// reads and deletes, reports StorageFull, and takes writes again once the
// volumes have grown, without a restart.
func TestFullVolumesRefuseWritesUntilTheyGrow(t *testing.T) {
	ns := freshNamespace(t, "e2e-full")
	defer dump(t, ns)
	// The claims first, as the StatefulSet would name them, so that each
	// volume is a small tmpfs before its pod mounts it.
	var dirs []string
	for i := 0; i < 3; i++ {
		apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data-full-%d
  labels: {app.kubernetes.io/name: kvnode, app.kubernetes.io/instance: full}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 48Mi}}
`, i))
	}
	for i := 0; i < 3; i++ {
		var pv string
		testutil.Eventually(t, 60*time.Second, "the claim bound", func() error {
			pv = jsonpath(t, ns, fmt.Sprintf("pvc/data-full-%d", i), "{.spec.volumeName}")
			if pv == "" {
				return fmt.Errorf("claim data-full-%d not bound", i)
			}
			return nil
		})
		dir := strings.TrimSpace(kubectl(t, "get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}"))
		mountTmpfs(t, dir, "48m", false)
		dirs = append(dirs, dir)
	}
	t.Cleanup(func() {
		_, _ = kubectlErr("delete", "kvs", "-n", ns, "full", "--wait=true", "--timeout=120s")
		_, _ = kubectlErr("wait", "-n", ns, "--for=delete", "pod", "-l", "app.kubernetes.io/instance=full", "--timeout=120s")
		for _, d := range dirs {
			if out, err := exec.Command("umount", d).CombinedOutput(); err != nil {
				t.Logf("umount %s: %v %s", d, err, out)
				_ = exec.Command("umount", "-l", d).Run()
			}
		}
	})
	apply(t, ns, `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: full
spec:
  replicas: 3
  clients: [{name: e2e}]
  storage: {size: 48Mi}
`)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/full", "--timeout=180s")
	c := client(t, ns, "full")
	base := "https://full." + ns + ".svc:8080/v1/key/"
	val := strings.Repeat("v", 4096)
	// Until the volumes are full for good: the first 507 makes the
	// members snapshot and compact, which may give back room for more;
	// full is when 30 writes in a row are refused.
	written, refused, inARow, first := 0, "", 0, 0
	for i := 0; i < 40000 && inARow < 30; i++ {
		code, body, err := do(c, "PUT", base+fmt.Sprintf("f%05d", i), val)
		switch {
		case err == nil && (code == 201 || code == 200):
			written++
			inARow = 0
		case err == nil && code == 507:
			if refused == "" {
				first = written
			}
			refused = body
			inARow++
			time.Sleep(100 * time.Millisecond)
		default:
			time.Sleep(100 * time.Millisecond) // an election: try the next key
		}
	}
	if inARow < 30 {
		t.Fatalf("%d writes of 4 KiB to 48 MiB volumes, not refused for good with 507 (last refusal %q)", written, refused)
	}
	t.Logf("%d writes of 4 KiB acknowledged before the first 507, %d in all before the volumes were full for good: %s", first, written, strings.TrimSpace(refused))
	session(t, c, "https://full."+ns+".svc:8080", []step{
		{"GET", "/v1/key/f00000", "", 200, val},
		{"DELETE", "/v1/key/f00001", "", 200, ""},
		{"GET", "/v1/key/f00001", "", 404, ""},
	})
	testutil.Eventually(t, 90*time.Second, "StorageFull", func() error {
		// A refused write keeps the leader's full state fresh.
		if code, body, err := do(c, "PUT", base+"while-full", val); err == nil && code != 507 {
			return fmt.Errorf("a write while full = %d %q", code, body)
		}
		if s := jsonpath(t, ns, "kvs/full", `{.status.conditions[?(@.type=="StorageFull")].status}`); s != "True" {
			return fmt.Errorf("StorageFull %q", s)
		}
		return nil
	})
	t.Logf("StorageFull: %s", jsonpath(t, ns, "kvs/full", `{.status.conditions[?(@.type=="StorageFull")].message}`))
	restarts := jsonpath(t, ns, "pods", "{range .items[*]}{.status.containerStatuses[0].restartCount}{end}")

	// The volumes grow (as an online expansion would): writes again.
	for _, d := range dirs {
		mountTmpfs(t, d, "256m", true)
	}
	grown := time.Now()
	testutil.Eventually(t, 60*time.Second, "a write accepted after the volumes grew", func() error {
		code, body, err := do(c, "PUT", base+"after-growth", "yes")
		if err != nil || (code != 201 && code != 200) {
			return fmt.Errorf("PUT = %d %q %v", code, body, err)
		}
		return nil
	})
	t.Logf("writes accepted %v after the volumes grew", time.Since(grown).Round(time.Millisecond))
	testutil.Eventually(t, 60*time.Second, "StorageFull false", func() error {
		if s := jsonpath(t, ns, "kvs/full", `{.status.conditions[?(@.type=="StorageFull")].status}`); s != "False" {
			return fmt.Errorf("StorageFull %q", s)
		}
		return nil
	})
	if after := jsonpath(t, ns, "pods", "{range .items[*]}{.status.containerStatuses[0].restartCount}{end}"); after != restarts {
		t.Fatalf("pods restarted: restart counts %s -> %s", restarts, after)
	}
}
