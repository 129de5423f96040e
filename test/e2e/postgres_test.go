//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/pglog/pgtest"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// A store in Postgres mode, its log in a PostgreSQL server that runs in
// the cluster's network namespace (Debian's binaries, on the node's
// address), comes up as a Deployment and scales from 2 to 6 pods while a
// writer runs, losing no acknowledged write.
func TestPostgresStoreScales(t *testing.T) {
	ns := freshNamespace(t, "e2e-postgres")
	defer dump(t, ns)
	pg := pgtest.StartWith(t, pgtest.Options{IP: nodeIP(t), Allow: "10.244.0.0/16"})
	defer func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", pg.Log())
		}
	}()
	db := pg.NewDatabase(t)
	kubectl(t, "create", "secret", "generic", "-n", ns, "pg", "--from-literal=username="+pgtest.User, "--from-literal=password="+pgtest.Password)
	manifest := fmt.Sprintf(`apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: pgkv
spec:
  replicas: 2
  clients: [{name: e2e}]
  log:
    type: postgres
    postgres:
      host: %s
      port: %d
      database: %s
      secretRef: {name: pg}
      sslMode: disable
`, pg.IP, pg.Port, db)
	f := filepath.Join(t.TempDir(), "pgkv.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/pgkv", "--timeout=180s")
	if out := kubectl(t, "get", "deployment,statefulset", "-n", ns, "-l", "app.kubernetes.io/instance=pgkv", "-o", "name"); strings.TrimSpace(out) != "deployment.apps/pgkv" {
		t.Fatalf("a postgres store runs as one Deployment, found: %s", out)
	}
	c := client(t, ns, "pgkv")
	base := "https://pgkv." + ns + ".svc:8080"
	session(t, c, base, []step{{"PUT", "/v1/key/greeting", "hello", 201, ""}, {"GET", "/v1/key/greeting", "", 200, "hello"}})

	var mu sync.Mutex
	acked := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, v := fmt.Sprintf("w%d-%d", w, i), strconv.Itoa(i)
				if code, _, err := do(c, "PUT", base+"/v1/key/"+k, v); err == nil && code == 201 {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				} else {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	kubectl(t, "scale", "-n", ns, "kvs/pgkv", "--replicas=6")
	testutil.Eventually(t, 240*time.Second, "6 ready pods", func() error {
		out := kubectl(t, "get", "deployment", "-n", ns, "pgkv", "-o", "jsonpath={.status.readyReplicas}")
		if out != "6" {
			return fmt.Errorf("%s ready", out)
		}
		if k := getKVS(t, ns, "pgkv"); k.Status.Phase != "Running" {
			return fmt.Errorf("%+v", k.Status)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // writes through the new pods too
	close(stop)
	wg.Wait()
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged while scaling", len(acked))
	}
	// Every pod answers every acknowledged write, linearizably: a new
	// connection per read spreads them over the pods.
	for k, v := range acked {
		c.CloseIdleConnections()
		if code, body, err := do(c, "GET", base+"/v1/key/"+k, ""); err != nil || code != 200 || body != v {
			t.Fatalf("acknowledged %s lost: %d %q %v", k, code, body, err)
		}
	}
	t.Logf("%d writes acknowledged while scaling 2→6, all readable", len(acked))
}

// nodeIP is the node's address on lo in the cluster's network namespace,
// which pods reach.
func nodeIP(t *testing.T) string {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatalf("no node address on lo (addresses %v): run inside the cluster's network namespace", addrs)
	return ""
}
