package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// The manager as main makes it (newManager, zapOptions), against a real
// kube-apiserver (envtest): one manager for the package, installed as
// config/namespaced installs it (watching its own namespace, with the
// RBAC of that overlay and nothing more), with secure metrics.
const (
	watchedNS   = "kvstore-system" // config/default's namespace
	unwatchedNS = "unwatched"
	// operatorSA is the operator's ServiceAccount in config/default.
	operatorSA = "kvstore-controller-manager"
)

var (
	k8s        client.Client
	cfg        *rest.Config
	mgr        ctrl.Manager
	metricsURL string
	logs       = &lockedBuffer{}
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds etcd and kube-apiserver (hack/k8s-binaries.sh) and sets it")
		os.Exit(1)
	}
	opts := zapOptions()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts), zap.WriteTo(logs)))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		CRDInstallOptions:     envtest.CRDInstallOptions{MaxTime: time.Minute},
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	code := run(m)
	_ = env.Stop()
	os.Exit(code)
}

func run(m *testing.M) int {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kvv1.AddToScheme(scheme))
	var err error
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unwatchedNS}}); err != nil {
		panic(err)
	}
	operator, err := installNamespaced(context.Background())
	if err != nil {
		panic(err)
	}
	addr := freePort()
	metricsURL = "https://" + addr + "/metrics"
	mgr, err = newManager(operator, settings{
		metricsAddr: addr, metricsSecure: true, probeAddr: "0",
		namespaces: []string{watchedNS},
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			panic(err)
		}
	}()
	return m.Run()
}

// installNamespaced creates what config/namespaced installs, but for the
// CRDs (envtest has them) and the Deployment (the test runs the manager),
// and returns a client configuration with the operator's ServiceAccount's
// token. Without kubectl (which builds the overlay) the manager runs as
// the envtest admin, and the RBAC is not checked.
func installNamespaced(ctx context.Context) (*rest.Config, error) {
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		kubectl = filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	}
	if _, err := os.Stat(kubectl); err != nil {
		fmt.Fprintf(os.Stderr, "no kubectl at %s (set KUBECTL): the manager runs as the admin, the RBAC of config/namespaced is not checked\n", kubectl)
		return cfg, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: watchedNS}})
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join("..", "..", "config", "namespaced")).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/namespaced: %w", err)
	}
	for doc := range strings.SplitSeq(string(out), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return nil, err
		}
		switch u.GetKind() {
		case "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			if err := k8s.Create(ctx, u); err != nil {
				return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
	}
	tr, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().ServiceAccounts(watchedNS).CreateToken(ctx, operatorSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	operator := rest.AnonymousClientConfig(cfg)
	operator.BearerToken = tr.Status.Token
	return operator, nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func store(ns, name string) *kvv1.KeyValueStore {
	return testutil.NewKVS(name, testutil.InNamespace(ns), testutil.WithReplicas(1))
}

// An unrelated Secret (one the operator did not label) is not in the
// manager's cache, and the uncached reader still finds it; the operator's
// own are in the cache.
func TestCacheHoldsOnlyTheOperatorsSecrets(t *testing.T) {
	ctx := context.Background()
	mine := store(watchedNS, "cached")
	if err := k8s.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: watchedNS, Name: "unrelated"}, StringData: map[string]string{"password": "x"}}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: watchedNS, Name: kvv1.CASecretName(mine)}
	testutil.Eventually(t, 30*time.Second, "the store's CA Secret in the cache", func() error {
		return mgr.GetCache().Get(ctx, key, &corev1.Secret{})
	})
	if err := mgr.GetAPIReader().Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{}); err != nil {
		t.Fatalf("the API reader: %v", err)
	}
	var list corev1.SecretList
	if err := mgr.GetCache().List(ctx, &list, client.InNamespace(watchedNS)); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if s.Name == other.Name {
			t.Fatalf("Secret %s, which the operator did not make, is in its cache", s.Name)
		}
		if s.Labels[kvv1.LabelManagedBy] != kvv1.ManagedBy {
			t.Errorf("Secret %s in the cache lacks %s", s.Name, kvv1.LabelManagedBy)
		}
	}
}

// With WATCH_NAMESPACE set, a store in another namespace is not
// reconciled: no Secret, no status.
func TestOtherNamespacesAreNotReconciled(t *testing.T) {
	ctx := context.Background()
	in, out := store(watchedNS, "in"), store(unwatchedNS, "out")
	for _, s := range []*kvv1.KeyValueStore{out, in} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "the watched store's status", func() error {
		got := &kvv1.KeyValueStore{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(in), got); err != nil {
			return err
		}
		if got.Status.Phase == "" {
			return fmt.Errorf("no phase yet")
		}
		return nil
	})
	// The store outside was created first: had it been reconciled, it
	// would be by now. Give it a little longer anyway.
	time.Sleep(2 * time.Second)
	got := &kvv1.KeyValueStore{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(out), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != "" || len(got.Status.Conditions) > 0 {
		t.Errorf("the store in %s was reconciled: %+v", unwatchedNS, got.Status)
	}
	var secrets corev1.SecretList
	if err := k8s.List(ctx, &secrets, client.InNamespace(unwatchedNS)); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) > 0 {
		t.Errorf("Secrets were made in %s: %d", unwatchedNS, len(secrets.Items))
	}
	// The Role was enough: nothing was refused (a cache of another
	// namespace, or of the whole cluster, would be).
	for line := range strings.SplitSeq(string(logs.Bytes()), "\n") {
		if strings.Contains(line, "is forbidden") {
			t.Errorf("refused: %.400s", line)
		}
	}
}

// A store whose reconcile fails on every attempt (its CA Secret is
// immutable and holds no CA) gives one short line per failure, without a
// stack trace, and the failures come further and further apart.
func TestAFailingStoreIsLoggedOncePerFailureAndBacksOff(t *testing.T) {
	ctx := context.Background()
	s := store(watchedNS, "failing")
	ca := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: watchedNS, Name: kvv1.CASecretName(s), Labels: kvv1.Labels(s)},
		Immutable:  ptr.To(true),
		StringData: map[string]string{"junk": "not a CA"},
	}
	if err := k8s.Create(ctx, ca); err != nil {
		t.Fatal(err)
	}
	errorsBefore := reconcileErrors(t)
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	const window = 4 * time.Second
	time.Sleep(window)
	failures := reconcileErrors(t) - errorsBefore

	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), watchedNS+"/failing") {
			lines = append(lines, sc.Text())
		}
	}
	errorLines := 0
	for _, l := range lines {
		var entry map[string]any
		if err := json.Unmarshal([]byte(l), &entry); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if _, ok := entry["stacktrace"]; ok {
			t.Errorf("a stack trace in %q", l)
		}
		if len(l) > 500 {
			t.Errorf("a line of %d characters: %q", len(l), l)
		}
		if entry["level"] == "error" {
			errorLines++
		}
	}
	t.Logf("%d failures in %s, %d error lines; the first: %s", failures, window, errorLines, first(lines))
	if failures == 0 {
		t.Fatal("the store did not fail: the test no longer tests anything")
	}
	if errorLines != failures {
		t.Errorf("%d error lines for %d failures: want one per failure", errorLines, failures)
	}
	// 0.5 s, 1 s, 2 s apart: four or five in 4 s (one more when the
	// status written by the first brings a reconcile at once); 5 ms apart,
	// as by default, would be a dozen.
	if failures > 6 {
		t.Errorf("%d failures in %s: the retries do not back off", failures, window)
	}
}

func first(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	return lines[0]
}

// reconcileErrors is controller-runtime's count of failed reconciles of
// the KeyValueStore controller.
func reconcileErrors(t *testing.T) int {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "keyvaluestore" {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// The metrics are served over HTTPS to a client the API server
// authenticates and that may GET /metrics (the metrics-reader role in
// config/rbac), and to nobody else.
func TestMetricsNeedATokenAllowedToReadThem(t *testing.T) {
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	reader := &rbacv1.ClusterRole{}
	readManifest(t, "../../config/rbac/metrics_reader_role.yaml", reader)
	if err := k8s.Create(ctx, reader); err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: watchedNS, Name: sa}}); err != nil {
			t.Fatal(err)
		}
		tr, err := cs.CoreV1().ServiceAccounts(watchedNS).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	scraper, stranger := token("scraper"), token("stranger")
	if err := k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: watchedNS, Name: "scraper"}},
	}); err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The server's certificate is self-signed (no CertDir).
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test checks authentication, not the certificate
	}}
	get := func(token string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return resp.StatusCode, body.String()
	}
	// The server starts with the manager, and RBAC takes a moment to
	// reach the authorizer.
	testutil.Eventually(t, 30*time.Second, "200 for the scraper", func() error {
		if code, body := get(scraper); code != http.StatusOK || !strings.Contains(body, "controller_runtime_reconcile_total") {
			return fmt.Errorf("%d %.200s", code, body)
		}
		return nil
	})
	if code, body := get(""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d %.200s, want 401", code, body)
	}
	// controller-runtime's filter answers 500 when the TokenReview says
	// the token is invalid (it takes the review's error for its own);
	// what matters is that nothing is served.
	if code, body := get("not-a-token"); code != http.StatusUnauthorized && code != http.StatusInternalServerError {
		t.Errorf("with a token the API server does not know: %d %.200s, want 401 or 500", code, body)
	}
	if code, body := get(stranger); code != http.StatusForbidden {
		t.Errorf("with a token not allowed to GET /metrics: %d %.200s, want 403", code, body)
	}
	resp, err := httpc.Get(strings.Replace(metricsURL, "https://", "http://", 1))
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the metrics are served over plain HTTP too")
		}
	}
}

func readManifest(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// lockedBuffer is the log output: written by the manager's goroutines,
// read by the tests.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
