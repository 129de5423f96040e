//go:build e2e

// Package e2e runs the operator and kvnode on the local single-node
// cluster (make cluster-up). `make test-e2e` loads the images, deploys
// the operator in the cluster and runs these tests inside the cluster's
// network namespace, so that they reach Services and pods directly.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

var kubectlBin, kubeconfig string

func TestMain(m *testing.M) {
	kubectlBin = os.Getenv("KUBECTL")
	kubeconfig = os.Getenv("KUBECONFIG")
	if kubectlBin == "" || kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "run with `make test-e2e` (it sets KUBECTL and KUBECONFIG and runs inside the cluster's network namespace)")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// dump prints what a person needs to see why a test failed.
func dump(t *testing.T, ns string) {
	if !t.Failed() {
		return
	}
	for _, args := range [][]string{
		{"get", "kvs,statefulsets,deployments,pods,services,pdb,hpa", "-n", ns, "-o", "wide"},
		{"describe", "kvs", "-n", ns},
		{"get", "events", "-n", ns, "--sort-by=.lastTimestamp"},
		{"logs", "-n", "kvstore-system", "deployment/kvstore-controller-manager", "--tail=100"},
		{"logs", "-n", ns, "-l", "app.kubernetes.io/name=kvnode", "--tail=30", "--prefix"},
	} {
		out, _ := kubectlErr(args...)
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
	}
	if dir := os.Getenv("KV_CLUSTER_LOGS"); dir != "" {
		t.Logf("component logs: %s", dir)
	}
}

// freshNamespace deletes ns if a previous run left it, and creates it.
func freshNamespace(t *testing.T, ns string) string {
	t.Helper()
	_, _ = kubectlErr("delete", "namespace", ns, "--wait=true", "--timeout=120s") // fails when there is none
	kubectl(t, "create", "namespace", ns)
	return ns
}

// client returns an HTTPS client of the store, as an application would
// set one up: it trusts the CA from the ConfigMap <name>-ca and presents
// the certificate of the store's first client (spec.clients), from that
// client's Secret.
func client(t *testing.T, ns, name string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(kubectl(t, "get", "configmap", "-n", ns, name+"-ca", "-o", "jsonpath={.data.ca\\.crt}"))) {
		t.Fatalf("no CA in ConfigMap %s-ca", name)
	}
	c := anonymous(t, ns, name, pool)
	out := kubectl(t, "get", "secret", "-n", ns, "-l", "app.kubernetes.io/instance="+name+",kv.kvstore.dev/client", "-o", "jsonpath={.items[0].data.tls\\.crt} {.items[0].data.tls\\.key}")
	parts := strings.Fields(out)
	if len(parts) != 2 {
		t.Fatalf("store %s has no client Secret (spec.clients)", name)
	}
	certPEM, err1 := base64.StdEncoding.DecodeString(parts[0])
	keyPEM, err2 := base64.StdEncoding.DecodeString(parts[1])
	pair, err3 := tls.X509KeyPair(certPEM, keyPEM)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
	return c
}

// anonymous is a client of the store's Service without a client certificate.
func anonymous(t *testing.T, ns, name string, pool *x509.CertPool) *http.Client {
	t.Helper()
	// The Service's DNS name is in the certificate; dial its ClusterIP.
	ip := strings.TrimSpace(kubectl(t, "get", "svc", "-n", ns, name, "-o", "jsonpath={.spec.clusterIP}"))
	dialer := &net.Dialer{Timeout: 3 * time.Second}
	// HTTP/2, as real clients negotiate it: a node that shuts down sends
	// GOAWAY, and the requests it did not take are sent again elsewhere.
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		},
	}}
}

func do(c *http.Client, method, url, body string) (int, string, error) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// step is one request of a session and the answer it must get ("" for
// any body).
type step struct {
	method, path, body string
	code               int
	want               string
}

// session sends the steps in order through c, retrying a request only
// while it cannot connect, and fails on the first unexpected answer.
func session(t *testing.T, c *http.Client, base string, steps []step) {
	t.Helper()
	for _, s := range steps {
		var code int
		var body string
		testutil.Eventually(t, 20*time.Second, s.method+" "+s.path, func() error {
			var err error
			code, body, err = do(c, s.method, base+s.path, s.body)
			return err
		})
		if code != s.code || (s.want != "" && body != s.want) {
			t.Fatalf("%s %s%s = %d %q", s.method, base, s.path, code, body)
		}
	}
}

type kvsStatus struct {
	Status struct {
		Phase   string `json:"phase"`
		Ready   string `json:"ready"`
		Leader  string `json:"leader"`
		Voters  int    `json:"voters"`
		Members []struct {
			Name    string `json:"name"`
			Role    string `json:"role"`
			Healthy bool   `json:"healthy"`
		} `json:"members"`
	} `json:"status"`
}

func getKVS(t *testing.T, ns, name string) kvsStatus {
	var k kvsStatus
	out := kubectl(t, "get", "kvs", "-n", ns, name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatalf("kvs %s: %v", name, err)
	}
	return k
}

// The sample comes up Ready, serves the book's session over HTTPS through
// its Service, and scales 3→5→3 while a writer runs, losing nothing.
func TestSampleStore(t *testing.T) {
	ns := freshNamespace(t, "e2e-sample")
	defer dump(t, ns)
	start := time.Now()
	kubectl(t, "apply", "-n", ns, "-f", filepath.Join("..", "..", "config", "samples"))
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/demo", "--timeout=180s")
	t.Logf("apply to Ready: %v", time.Since(start).Round(100*time.Millisecond))
	out := kubectl(t, "get", "kvstores", "-n", ns)
	if !strings.Contains(out, "3/3") || !strings.Contains(out, "Running") {
		t.Fatalf("kubectl get kvstores:\n%s", out)
	}
	t.Logf("\n%s", out)

	c := client(t, ns, "demo")
	base := "https://demo." + ns + ".svc:8080"
	// Client authentication is on by default: a request without the
	// client's certificate is refused, with the reason.
	pool := c.Transport.(*http.Transport).TLSClientConfig.RootCAs
	if code, body, err := do(anonymous(t, ns, "demo", pool), "GET", base+"/v1/key-a", ""); err != nil || code != 401 || !strings.Contains(body, "no client certificate") {
		t.Fatalf("GET without a client certificate = %d %q %v, want 401 saying why", code, body, err)
	}
	session(t, c, base, []step{
		{"PUT", "/v1/key-a", "Hello, key-value store!", 201, ""},
		{"GET", "/v1/key-a", "", 200, "Hello, key-value store!"},
		{"DELETE", "/v1/key-a", "", 200, ""},
		{"GET", "/v1/key-a", "", 404, ""},
	})

	// The sample's client pod: kvctl in the kvnode image, with client
	// app's Secret mounted, as `make demo` uses it.
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pod/demo-client", "--timeout=120s")
	kubectl(t, "exec", "-n", ns, "demo-client", "--", "/kvctl", "put", "from-pod", "Hello from kvctl")
	if out := kubectl(t, "exec", "-n", ns, "demo-client", "--", "/kvctl", "get", "from-pod"); out != "Hello from kvctl" {
		t.Fatalf("kvctl get in the client pod: %q", out)
	}
	if code, body, err := do(c, "GET", base+"/v1/key/from-pod", ""); err != nil || code != 200 || body != "Hello from kvctl" {
		t.Fatalf("the client pod's write, read through the Service: %d %q %v", code, body, err)
	}
	// gRPC through the Service's port 50051, with the same certificate.
	kubectl(t, "exec", "-n", ns, "demo-client", "--", "/kvctl", "put", "--grpc", "--endpoint", "https://demo:50051", "over-grpc", "Hello over gRPC")
	if out := kubectl(t, "exec", "-n", ns, "demo-client", "--", "/kvctl", "get", "over-grpc"); out != "Hello over gRPC" {
		t.Fatalf("a gRPC write read over REST: %q", out)
	}
	if out, err := kubectlErr("exec", "-n", ns, "demo-client", "--", "/kvctl", "get", "--grpc", "--endpoint", "https://demo:50051", "from-pod"); err != nil || out != "Hello from kvctl" {
		t.Fatalf("a REST write read over gRPC: %q %v", out, err)
	}

	// Scale 3→5→3 with a writer running.
	stop := make(chan struct{})
	acked := map[string]string{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("scale-%d", i), fmt.Sprint(i)
			if code, _, err := do(c, "PUT", base+"/v1/key/"+k, v); err == nil && code == 201 {
				acked[k] = v
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	kubectl(t, "scale", "-n", ns, "kvs/demo", "--replicas=5")
	testutil.Eventually(t, 180*time.Second, "5 voters", func() error {
		if k := getKVS(t, ns, "demo"); k.Status.Voters != 5 || k.Status.Phase != "Running" {
			return fmt.Errorf("%+v", k.Status)
		}
		return nil
	})
	kubectl(t, "scale", "-n", ns, "kvs/demo", "--replicas=3")
	testutil.Eventually(t, 180*time.Second, "back to 3 voters", func() error {
		k := getKVS(t, ns, "demo")
		if k.Status.Voters != 3 || len(k.Status.Members) != 3 || k.Status.Phase != "Running" {
			return fmt.Errorf("%+v", k.Status)
		}
		return nil
	})
	close(stop)
	<-done
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged while scaling", len(acked))
	}
	for k, v := range acked {
		if code, body, err := do(c, "GET", base+"/v1/key/"+k, ""); err != nil || code != 200 || body != v {
			t.Fatalf("acknowledged %s lost: %d %q %v", k, code, body, err)
		}
	}
	t.Logf("%d writes acknowledged during 3→5→3, all readable", len(acked))

	// Delete the leader pod: writes resume, nothing lost.
	leader := getKVS(t, ns, "demo").Status.Leader
	kubectl(t, "delete", "pod", "-n", ns, leader, "--wait=false")
	t0 := time.Now()
	testutil.Eventually(t, 60*time.Second, "a write after the leader pod was deleted", func() error {
		code, _, err := do(c, "PUT", base+"/v1/key/after-leader-loss", "x")
		if err != nil || code != 201 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	t.Logf("writes resumed %v after deleting leader %s", time.Since(t0).Round(100*time.Millisecond), leader)
	for k, v := range acked {
		if code, body, err := do(c, "GET", base+"/v1/key/"+k, ""); err != nil || code != 200 || body != v {
			t.Fatalf("acknowledged %s lost after the leader died: %d %q %v", k, code, body, err)
		}
	}

	// Delete pod 0, the member that bootstrapped the cluster. Its new pod
	// has a new IP; the configuration knows it by its DNS name, so it
	// rejoins as a healthy voter, not merely lets writes resume.
	uid0 := kubectl(t, "get", "pod", "-n", ns, "demo-0", "-o", "jsonpath={.metadata.uid}")
	kubectl(t, "delete", "pod", "-n", ns, "demo-0", "--wait=false")
	t0 = time.Now()
	testutil.Eventually(t, 180*time.Second, "pod 0 back as a healthy voter", func() error {
		if uid, err := kubectlErr("get", "pod", "-n", ns, "demo-0", "-o", "jsonpath={.metadata.uid}"); err != nil || uid == uid0 {
			return fmt.Errorf("pod demo-0 not recreated yet (%v)", err)
		}
		k := getKVS(t, ns, "demo")
		if k.Status.Ready != "3/3" || k.Status.Voters != 3 || k.Status.Phase != "Running" {
			return fmt.Errorf("%+v", k.Status)
		}
		for _, m := range k.Status.Members {
			if m.Name == "demo-0" && m.Role == "voter" && m.Healthy {
				return nil
			}
		}
		return fmt.Errorf("demo-0 is not a healthy voter: %+v", k.Status.Members)
	})
	t.Logf("pod 0 rejoined as a healthy voter %v after it was deleted", time.Since(t0).Round(100*time.Millisecond))
	if code, _, err := do(c, "PUT", base+"/v1/key/after-pod-0", "x"); err != nil || code != 201 {
		t.Fatalf("PUT after pod 0 rejoined: %d %v", code, err)
	}
}

// serial returns the serial number of the certificate the client Service
// presents on a new connection.
func serial(t *testing.T, ns, name string) string {
	t.Helper()
	c := client(t, ns, name)
	var s string
	testutil.Eventually(t, 20*time.Second, "a TLS connection", func() error {
		resp, err := c.Get("https://" + name + "." + ns + ".svc:8080/livez")
		if err != nil {
			return err
		}
		resp.Body.Close()
		s = resp.TLS.PeerCertificates[0].SerialNumber.String()
		return nil
	})
	return s
}

func podUIDs(t *testing.T, ns string) string {
	return kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=kvnode", "-o", "jsonpath={range .items[*]}{.metadata.uid}:{.status.containerStatuses[0].restartCount} {end}")
}

// Forced renewal: new certificates reach every member without a restart,
// and clients (which trust the CA, unchanged) keep working.
func TestCertificateRenewalWithoutRestarts(t *testing.T) {
	ns := freshNamespace(t, "e2e-certs")
	defer dump(t, ns)
	kubectl(t, "apply", "-n", ns, "-f", filepath.Join("..", "..", "config", "samples"))
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/demo", "--timeout=180s")
	before, pods := serial(t, ns, "demo"), podUIDs(t, ns)
	kubectl(t, "annotate", "-n", ns, "kvs/demo", "kv.kvstore.dev/renew-certificates="+time.Now().Format(time.RFC3339), "--overwrite")
	c := client(t, ns, "demo")
	base := "https://demo." + ns + ".svc:8080"
	start := time.Now()
	// The kubelet refreshes Secret volumes on its own schedule (up to about
	// a minute), then kvnode re-reads the files within 10 s.
	testutil.Eventually(t, 150*time.Second, "every member serving the new certificate", func() error {
		if code, _, err := do(c, "PUT", base+"/v1/key/during-renewal", "x"); err != nil || code != 201 {
			return fmt.Errorf("write during renewal: %d %v", code, err)
		}
		for i := 0; i < 6; i++ { // new connections land on different members
			if s := serial(t, ns, "demo"); s == before {
				return fmt.Errorf("a member still serves serial %s", s)
			}
		}
		return nil
	})
	t.Logf("new certificate served %v after the renewal request", time.Since(start).Round(time.Second))
	if after := podUIDs(t, ns); after != pods {
		t.Fatalf("pods restarted: %s -> %s", pods, after)
	}
	if out := kubectl(t, "get", "events", "-n", ns, "--field-selector", "reason=CertificateRenewed"); !strings.Contains(out, "CertificateRenewed") {
		t.Fatalf("no CertificateRenewed event:\n%s", out)
	}
}

// Autoscaling: the HPA has the right bounds and target; scaling the
// StatefulSet by hand, as the HPA would, adds and removes non-voters and
// never changes the voters.
func TestAutoscalingAddsReadReplicas(t *testing.T) {
	ns := freshNamespace(t, "e2e-autoscale")
	defer dump(t, ns)
	manifest := `apiVersion: kv.kvstore.dev/v1alpha1
kind: KeyValueStore
metadata:
  name: auto
spec:
  replicas: 3
  clients: [{name: e2e}]
  autoscaling:
    enabled: true
    minReplicas: 3
    maxReplicas: 5
    targetCPUUtilizationPercentage: 60
`
	f := filepath.Join(t.TempDir(), "auto.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "kvs/auto", "--timeout=180s")
	hpa := kubectl(t, "get", "hpa", "-n", ns, "auto", "-o", "jsonpath={.spec.minReplicas} {.spec.maxReplicas} {.spec.metrics[0].resource.target.averageUtilization} {.spec.scaleTargetRef.kind}/{.spec.scaleTargetRef.name}")
	if hpa != "3 5 60 StatefulSet/auto" {
		t.Fatalf("HPA: %s", hpa)
	}
	kubectl(t, "scale", "-n", ns, "statefulset/auto", "--replicas=5")
	testutil.Eventually(t, 180*time.Second, "two read replicas", func() error {
		k := getKVS(t, ns, "auto")
		nonVoters := 0
		for _, m := range k.Status.Members {
			if m.Role == clusterapi.RoleNonVoter {
				nonVoters++
			}
		}
		if len(k.Status.Members) != 5 || nonVoters != 2 || k.Status.Voters != 3 {
			return fmt.Errorf("%+v", k.Status)
		}
		return nil
	})
	// A stale read on a replica works.
	c := client(t, ns, "auto")
	if code, _, err := do(c, "PUT", "https://auto."+ns+".svc:8080/v1/key/k", "v"); err != nil || code != 201 {
		t.Fatalf("PUT: %d %v", code, err)
	}
	kubectl(t, "scale", "-n", ns, "statefulset/auto", "--replicas=3")
	testutil.Eventually(t, 180*time.Second, "replicas removed", func() error {
		k := getKVS(t, ns, "auto")
		if len(k.Status.Members) != 3 || k.Status.Voters != 3 || k.Status.Phase != "Running" {
			return fmt.Errorf("%+v", k.Status)
		}
		return nil
	})
	// The removed replicas' pods are gone too. Until then the client's
	// connection may still lead to one of them through the Service (a
	// connection keeps its pod), and a member removed from the cluster can
	// no longer confirm a read: it answers 503, never a stale value.
	testutil.Eventually(t, 120*time.Second, "the replicas' pods gone", func() error {
		if pods := strings.Fields(kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=auto", "-o", "name")); len(pods) != 3 {
			return fmt.Errorf("pods %v", pods)
		}
		return nil
	})
	c = client(t, ns, "auto")
	if code, body, err := do(c, "GET", "https://auto."+ns+".svc:8080/v1/key/k", ""); err != nil || code != 200 || body != "v" {
		t.Fatalf("GET after scaling down: %d %q %v", code, body, err)
	}

	// Deleting the store deletes its children; the volumes stay
	// (storage.retentionPolicy.whenDeleted defaults to Retain).
	kubectl(t, "delete", "-n", ns, "kvs/auto", "--wait=true", "--timeout=120s")
	testutil.Eventually(t, 120*time.Second, "children deleted", func() error {
		out := kubectl(t, "get", "statefulsets,services,secrets,pdb,hpa,pods", "-n", ns, "-l", "app.kubernetes.io/instance=auto", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
	if pvcs := kubectl(t, "get", "pvc", "-n", ns, "-o", "name"); strings.Count(pvcs, "persistentvolumeclaim/") != 3 {
		t.Fatalf("volumes after deletion (want the 3 voters' kept):\n%s", pvcs)
	}
}
