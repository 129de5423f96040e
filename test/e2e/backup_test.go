//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

const backupKeys = 10000

func apply(t *testing.T, ns, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)
}

// parallel runs f(i) for i in [0, n) on 16 workers and fails on the first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func key(i int) string   { return fmt.Sprintf("k%05d", i) }
func value(i int) string { return fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%200)) }

// writeKeys writes the test's keys to the store, retrying what an
// election refuses.
func writeKeys(t *testing.T, ns, name string) {
	t.Helper()
	c := client(t, ns, name)
	base := "https://" + name + "." + ns + ".svc:8080/v1/key/"
	parallel(t, backupKeys, func(i int) error {
		var last string
		for attempt := 0; attempt < 50; attempt++ {
			code, body, err := do(c, "PUT", base+key(i), value(i))
			if err == nil && (code == 201 || code == 200) {
				return nil
			}
			last = fmt.Sprintf("%d %q %v", code, body, err)
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("PUT %s: %s", key(i), last)
	})
}

// checkKeys reads every key back through the store's Service.
func checkKeys(t *testing.T, ns, name string) {
	t.Helper()
	c := client(t, ns, name)
	base := "https://" + name + "." + ns + ".svc:8080/v1/key/"
	parallel(t, backupKeys, func(i int) error {
		var last string
		for attempt := 0; attempt < 50; attempt++ {
			code, body, err := do(c, "GET", base+key(i), "")
			if err == nil && code == 200 {
				if body != value(i) {
					return fmt.Errorf("GET %s = %q, want %q", key(i), body, value(i))
				}
				return nil
			}
			if err == nil && code == 404 {
				return fmt.Errorf("GET %s: 404: the key is missing", key(i))
			}
			last = fmt.Sprintf("%d %q %v", code, body, err)
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("GET %s: %s", key(i), last)
	})
}

type backupStatus struct {
	Status struct {
		Phase    string `json:"phase"`
		Message  string `json:"message"`
		Location string `json:"location"`
		Keys     int64  `json:"keys"`
		Size     int64  `json:"size"`
		Index    int64  `json:"raftIndex"`
	} `json:"status"`
}

func waitBackup(t *testing.T, ns, name string) backupStatus {
	t.Helper()
	var b backupStatus
	testutil.Eventually(t, 180*time.Second, "backup "+name+" to succeed", func() error {
		out, err := kubectlErr("get", "kvsbackup", "-n", ns, name, "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			return err
		}
		switch b.Status.Phase {
		case "Succeeded":
			return nil
		case "Failed":
			t.Fatalf("backup %s failed: %s", name, b.Status.Message)
		}
		return fmt.Errorf("phase %q %s", b.Status.Phase, b.Status.Message)
	})
	return b
}

func jsonpath(t *testing.T, ns, obj, path string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, "get", "-n", ns, obj, "-o", "jsonpath="+path))
}

// deleteStore deletes a store, its pods and its volume claims, and waits
// until they are gone.
func deleteStore(t *testing.T, ns, name string) {
	t.Helper()
	kubectl(t, "delete", "kvs", "-n", ns, name, "--wait=true", "--timeout=120s")
	kubectl(t, "delete", "pvc", "-n", ns, "-l", "app.kubernetes.io/instance="+name, "--wait=true", "--timeout=120s")
	testutil.Eventually(t, 120*time.Second, "the store's pods and claims gone", func() error {
		out := kubectl(t, "get", "pods,pvc", "-n", ns, "-l", "app.kubernetes.io/instance="+name, "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
}

// Backups end to end: 10,000 keys backed up to a volume and to S3; the
// store and its volumes deleted; two new stores restored, one from each,
// with every key and value; a corrupted backup refused; scheduled
// backups pruned; and a store that lost two of its three volumes brought
// back from the survivor on the annotation.
func TestBackupRestoreAndQuorumLoss(t *testing.T) {
	ns := freshNamespace(t, "e2e-backup")
	defer dump(t, ns)
	s3 := startS3(t)
	kubectl(t, "create", "secret", "generic", "-n", ns, "s3-credentials",
		"--from-literal=accessKeyID="+s3.AccessKey, "--from-literal=secretAccessKey="+s3.SecretKey)

	apply(t, ns, `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: src
spec:
  replicas: 3
  clients: [{name: e2e}]
`)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/src", "--timeout=180s")
	start := time.Now()
	writeKeys(t, ns, "src")
	t.Logf("wrote %d keys in %v", backupKeys, time.Since(start).Round(time.Millisecond))
	srcID := jsonpath(t, ns, "kvs/src", "{.status.clusterID}")

	apply(t, ns, fmt.Sprintf(`apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStoreBackup
metadata:
  name: to-volume
spec:
  store: src
---
apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStoreBackup
metadata:
  name: to-s3
spec:
  store: src
  destination:
    s3:
      endpoint: %s
      bucket: %s
      prefix: e2e/
      credentialsSecret: s3-credentials
`, s3.Endpoint, s3.Bucket))
	var s3Key string
	for _, name := range []string{"to-volume", "to-s3"} {
		b := waitBackup(t, ns, name)
		if name == "to-s3" {
			s3Key = strings.TrimPrefix(b.Status.Location, "s3://"+s3.Bucket+"/")
		}
		if b.Status.Keys != backupKeys || b.Status.Index == 0 || b.Status.Size == 0 {
			t.Fatalf("backup %s: %+v", name, b.Status)
		}
		t.Logf("backup %s: %d keys, %d bytes, index %d, in %s", name, b.Status.Keys, b.Status.Size, b.Status.Index, b.Status.Location)
	}
	if out := kubectl(t, "get", "kvsbackup", "-n", ns); !strings.Contains(out, "Succeeded") || !strings.Contains(out, "KEYS") {
		t.Fatalf("kubectl get kvsbackup:\n%s", out)
	}

	// Scheduled backups: a new one every 20 s, one kept.
	kubectl(t, "patch", "kvs", "-n", ns, "src", "--type=merge", "-p", `{"spec":{"backup":{"schedule":"@every 20s","keep":1}}}`)
	testutil.Eventually(t, 240*time.Second, "two scheduled backups taken and the older pruned", func() error {
		out := kubectl(t, "get", "kvsbackup", "-n", ns, "-l", "kv.kvstore.dev/scheduled=true", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}")
		items := strings.Fields(out)
		last := jsonpath(t, ns, "kvs/src", "{.status.lastScheduledBackup}")
		if len(items) != 1 || !strings.HasSuffix(items[0], "=Succeeded") {
			return fmt.Errorf("scheduled backups: %v (last scheduled %s)", items, last)
		}
		// At least a second one was made: the first was pruned.
		if !recorded(t, ns, "BackupComplete", 4) {
			return fmt.Errorf("fewer than two scheduled backups completed yet: %v", items)
		}
		return nil
	})
	kubectl(t, "patch", "kvs", "-n", ns, "src", "--type=json", "-p", `[{"op":"remove","path":"/spec/backup"}]`)

	deleteStore(t, ns, "src")

	apply(t, ns, `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: from-volume
spec:
  replicas: 3
  clients: [{name: e2e}]
  restore:
    backupName: to-volume
`)
	start = time.Now()
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/from-volume", "--timeout=300s")
	t.Logf("store restored from the volume backup and Ready in %v", time.Since(start).Round(time.Second))
	checkKeys(t, ns, "from-volume")
	if id := jsonpath(t, ns, "kvs/from-volume", "{.status.clusterID}"); id == "" || id == srcID {
		t.Fatalf("restored cluster ID %q, the source's %q: want a new one", id, srcID)
	}
	if from := jsonpath(t, ns, "kvs/from-volume", "{.status.restoredFrom}"); !strings.Contains(from, "to-volume") {
		t.Fatalf("status.restoredFrom %q", from)
	}
	deleteStore(t, ns, "from-volume")

	apply(t, ns, fmt.Sprintf(`apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: from-s3
spec:
  replicas: 3
  clients: [{name: e2e}]
  restore:
    s3:
      endpoint: %s
      bucket: %s
      key: %s
      credentialsSecret: s3-credentials
`, s3.Endpoint, s3.Bucket, s3Key))
	start = time.Now()
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/from-s3", "--timeout=300s")
	t.Logf("store restored from S3 and Ready in %v", time.Since(start).Round(time.Second))
	checkKeys(t, ns, "from-s3")

	// A corrupted backup: refused, and no pod starts.
	s3.Corrupt(t, s3Key, "e2e/corrupt.kvbackup")
	apply(t, ns, fmt.Sprintf(`apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: bad
spec:
  replicas: 1
  clients: [{name: e2e}]
  restore:
    s3:
      endpoint: %s
      bucket: %s
      key: e2e/corrupt.kvbackup
      credentialsSecret: s3-credentials
`, s3.Endpoint, s3.Bucket))
	t.Logf("refused: %s", waitDegraded(t, ns, "bad", "RestoreFailed", "corrupt", 180*time.Second))
	if out := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=bad,app.kubernetes.io/name=kvnode", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods of a store whose restore failed: %s", out)
	}
	kubectl(t, "delete", "kvs", "-n", ns, "bad", "--wait=true")

	// Quorum loss: two of three pods lose their volumes.
	kubectl(t, "delete", "pvc", "-n", ns, "data-from-s3-1", "data-from-s3-2", "--wait=false")
	kubectl(t, "delete", "pod", "-n", ns, "from-s3-1", "from-s3-2", "--wait=false")
	t.Logf("QuorumLost: %s", waitDegraded(t, ns, "from-s3", "QuorumLost", "from-s3-0", 240*time.Second))
	kubectl(t, "annotate", "kvs", "-n", ns, "from-s3", "kv.kvstore.dev/recover-from=from-s3-0")
	start = time.Now()
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/from-s3", "--timeout=300s")
	t.Logf("Ready again %v after the annotation", time.Since(start).Round(time.Second))
	checkKeys(t, ns, "from-s3")
	if st := getKVS(t, ns, "from-s3"); st.Status.Voters != 3 {
		t.Fatalf("after recovery: %+v", st.Status)
	}
}

// recorded says whether at least n events of reason exist in ns.
func recorded(t *testing.T, ns, reason string, n int) bool {
	out := kubectl(t, "get", "events", "-n", ns, "--field-selector", "reason="+reason, "-o", "name")
	return len(strings.Fields(out)) >= n
}

// s3Server is SeaweedFS's S3 gateway, run by the test inside the
// cluster's network namespace on the node address, which pods reach.
type s3Server struct{ *testutil.S3 }

func startS3(t *testing.T) s3Server {
	t.Helper()
	return s3Server{testutil.StartS3On(t, nodeIP(t))}
}

// Corrupt copies the object at from to to with one byte in its middle
// flipped.
func (s s3Server) Corrupt(t *testing.T, from, to string) {
	t.Helper()
	ctx := context.Background()
	c := s.Client(t)
	obj, err := c.GetObject(ctx, s.Bucket, from, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(obj)
	_ = obj.Close()
	if err != nil {
		t.Fatalf("read %s: %v", from, err)
	}
	b[len(b)/2] ^= 0x20
	if _, err := c.PutObject(ctx, s.Bucket, to, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s: %v", to, err)
	}
}

// waitDegraded waits until store is Degraded with reason and a message
// that contains want, and returns the message.
func waitDegraded(t *testing.T, ns, store, reason, want string, timeout time.Duration) string {
	t.Helper()
	var msg string
	testutil.Eventually(t, timeout, store+" Degraded, reason "+reason, func() error {
		r := jsonpath(t, ns, "kvs/"+store, `{.status.conditions[?(@.type=="Degraded")].reason}`)
		msg = jsonpath(t, ns, "kvs/"+store, `{.status.conditions[?(@.type=="Degraded")].message}`)
		if r != reason || !strings.Contains(msg, want) {
			return fmt.Errorf("Degraded %q %q", r, msg)
		}
		return nil
	})
	return msg
}
