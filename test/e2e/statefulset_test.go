//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/certs"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// Without the operator: a StatefulSet of 3 kvnode pods from plain
// manifests with a headless Service. The test does the operator's part
// itself (bootstrap kv-0, add kv-1 and kv-2, promote them); the members
// reach each other by their DNS names, and a client in the namespace
// writes and reads through a ClusterIP Service.
func TestPlainStatefulSet(t *testing.T) {
	ns := freshNamespace(t, "e2e-plain")
	defer dump(t, ns)
	ca, err := certs.NewCA("e2e", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"kv", "kv." + ns + ".svc", "*.kv-peers." + ns + ".svc"}
	srvCert, srvKey, _ := ca.Issue(certs.Leaf{CommonName: "kv", DNSNames: names, Server: true, Lifetime: time.Hour}, time.Now())
	peerCert, peerKey, _ := ca.Issue(certs.Leaf{CommonName: "kv-peer", DNSNames: names, Server: true, Client: true, Lifetime: time.Hour}, time.Now())
	adminCert, adminKey, _ := ca.Issue(certs.Leaf{CommonName: "kvstore-admin", Client: true, Lifetime: time.Hour}, time.Now())
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.crt": ca.CertPEM, "tls.crt": srvCert, "tls.key": srvKey, "peer.crt": peerCert, "peer.key": peerKey} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubectl(t, "create", "secret", "generic", "-n", ns, "kv-tls", "--from-file="+dir)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: kv-peers}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: kv}
  ports: [{name: api, port: 8080}, {name: peer, port: 8081}]
---
apiVersion: v1
kind: Service
metadata: {name: kv}
spec:
  selector: {app: kv}
  ports: [{name: api, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  serviceName: kv-peers
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      containers:
      - name: kvnode
        image: kvstore.dev/kvnode:dev
        imagePullPolicy: IfNotPresent
        env:
        - {name: KV_NODE_ID, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: KV_PEER_LISTEN, value: "0.0.0.0:8081"}
        - {name: KV_PEER_ADVERTISE, value: "$(KV_NODE_ID).kv-peers.%[1]s.svc:8081"}
        - {name: KV_API_ADVERTISE, value: "https://$(KV_NODE_ID).kv-peers.%[1]s.svc:8080"}
        - {name: KV_BOOTSTRAP, value: %[2]s}
        - {name: KV_TLS_CERT, value: /tls/tls.crt}
        - {name: KV_TLS_KEY, value: /tls/tls.key}
        - {name: KV_TLS_CA, value: /tls/ca.crt}
        - {name: KV_PEER_TLS_CERT, value: /tls/peer.crt}
        - {name: KV_PEER_TLS_KEY, value: /tls/peer.key}
        - {name: KV_PEER_TLS_CA, value: /tls/ca.crt}
        - {name: KV_DATA_DIR, value: /data}
        volumeMounts: [{name: tls, mountPath: /tls}, {name: data, mountPath: /data}]
      volumes:
      - {name: tls, secret: {secretName: kv-tls}}
      - {name: data, emptyDir: {}}
`, ns, clusterapi.BootstrapNever)
	f := filepath.Join(dir, "kv.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-n", ns, "-f", f)

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair, _ := tls.X509KeyPair(adminCert, adminKey)
	podIP := func(i int) string {
		return strings.TrimSpace(kubectl(t, "get", "pod", "-n", ns, fmt.Sprintf("kv-%d", i), "-o", "jsonpath={.status.podIP}"))
	}
	// The test reaches members by IP but checks their certificates by name.
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			var i int
			if _, err := fmt.Sscanf(host, "kv-%d.", &i); err != nil {
				return nil, fmt.Errorf("not a member's name: %s", host)
			}
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(podIP(i), port))
		},
	}}
	call := func(i int, method, path string, body any) error {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, fmt.Sprintf("https://kv-%d.kv-peers.%s.svc:8080%s", i, ns, path), rd)
		resp, err := admin.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return nil
	}
	testutil.Eventually(t, 120*time.Second, "kv-0 answers", func() error { return call(0, "GET", "/livez", nil) })
	testutil.Eventually(t, 30*time.Second, "bootstrap kv-0", func() error { return call(0, "POST", clusterapi.PathBootstrap, nil) })
	for i := 1; i < 3; i++ {
		id := fmt.Sprintf("kv-%d", i)
		add := clusterapi.AddMemberRequest{ID: id, Address: fmt.Sprintf("%s.kv-peers.%s.svc:8081", id, ns), API: fmt.Sprintf("https://%s.kv-peers.%s.svc:8080", id, ns)}
		testutil.Eventually(t, 60*time.Second, "add "+id, func() error { return call(0, "POST", clusterapi.PathMembers, add) })
		// Promotion succeeds only once kv-i replicated through kv-0 dialling its DNS name.
		testutil.Eventually(t, 60*time.Second, "promote "+id, func() error {
			return call(0, "POST", clusterapi.MemberPath(clusterapi.PathPromote, id), nil)
		})
	}
	kubectl(t, "rollout", "status", "-n", ns, "statefulset/kv", "--timeout=120s")

	// A client in the namespace, through the ClusterIP Service.
	ip := strings.TrimSpace(kubectl(t, "get", "svc", "-n", ns, "kv", "-o", "jsonpath={.spec.clusterIP}"))
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "kv." + ns + ".svc"},
	}}
	base := "https://" + ip + ":8080"
	session(t, c, base, []step{
		{"PUT", "/v1/key-a", "Hello, key-value store!", 201, ""},
		{"GET", "/v1/key-a", "", 200, "Hello, key-value store!"},
	})
}
