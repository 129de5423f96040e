package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func withClients(clients ...kvv1.ClientSpec) testutil.Option {
	return func(k *kvv1.KeyValueStore) { k.Spec.Clients = clients }
}

func rulesOf(t *testing.T, ns, store string) map[string]access.Client {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := get(t, ns, store+"-clients", cm); err != nil {
		return nil
	}
	rules, err := access.ParseRules([]byte(cm.Data[access.RulesFile]))
	if err != nil {
		t.Fatalf("the rules the pods would read: %v", err)
	}
	return rules
}

func clientCert(t *testing.T, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(s.Data["tls.crt"])
	if b == nil {
		t.Fatalf("Secret %s: no certificate", s.Name)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runsMTLS(sts *appsv1.StatefulSet) bool {
	return slices.Contains(sts.Spec.Template.Spec.Containers[0].Args, "--client-auth=mtls")
}

func envOf(sts *appsv1.StatefulSet, name string) string {
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// A new store enforces client certificates: each listed client gets a
// certificate Secret of the store's CA, the pods get the rules, clients
// get the CA alone in a ConfigMap; a removed client loses its Secret and
// its place in the rules, and one added again under the same name does
// not get its old certificate back.
func TestClientsGetCertificatesAndRules(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	k := testutil.NewKVS("shop", testutil.InNamespace(ns), withClients(
		kvv1.ClientSpec{Name: "app", Prefix: "orders/"},
		kvv1.ClientSpec{Name: "reports", Access: kvv1.ClientReadOnly},
	))
	if err := k8s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	caSecret, app := &corev1.Secret{}, &corev1.Secret{}
	testutil.Eventually(t, 20*time.Second, "client Secrets and rules", func() error {
		if err := get(t, ns, "shop-ca", caSecret); err != nil {
			return err
		}
		if err := get(t, ns, "shop-client-app", app); err != nil {
			return err
		}
		if r := rulesOf(t, ns, "shop"); len(r) != 2 {
			return fmt.Errorf("rules %v", r)
		}
		return nil
	})
	for _, key := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if len(app.Data[key]) == 0 {
			t.Errorf("client Secret without %s", key)
		}
	}
	cert := clientCert(t, app)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caSecret.Data["ca.crt"])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the client certificate does not chain to the store's CA: %v", err)
	}
	if cert.Subject.CommonName != access.CommonName("app") || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("client certificate %q with usages %v", cert.Subject.CommonName, cert.ExtKeyUsage)
	}
	rules := rulesOf(t, ns, "shop")
	if a := rules["app"]; a.Access != access.ReadWrite || a.Prefix != "orders/" || a.IssuedAfter.After(cert.NotBefore) || a.IssuedAfter.IsZero() {
		t.Errorf("app's rule %+v (certificate from %v)", a, cert.NotBefore)
	}
	if r := rules["reports"]; r.Access != access.ReadOnly || r.Prefix != "" {
		t.Errorf("reports' rule %+v", r)
	}
	// The CA alone, for clients; no key anywhere in it.
	caMap := &corev1.ConfigMap{}
	mustGet(t, ns, "shop-ca", caMap)
	if caMap.Data["ca.crt"] != string(caSecret.Data["ca.crt"]) || len(caMap.Data) != 1 || strings.Contains(caMap.Data["ca.crt"], "PRIVATE KEY") {
		t.Errorf("ConfigMap shop-ca: %v", caMap.Data)
	}
	sts := &appsv1.StatefulSet{}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "shop", sts) })
	if !runsMTLS(sts) || envOf(sts, "KV_PEER_DOMAIN") != "shop-peers."+ns+".svc" {
		t.Errorf("pods: args %v, KV_PEER_DOMAIN=%q", sts.Spec.Template.Spec.Containers[0].Args, envOf(sts, "KV_PEER_DOMAIN"))
	}
	waitStatus(t, ns, "shop", func(st kvv1.KeyValueStoreStatus) error {
		if st.ClientAuth != "mtls" {
			return fmt.Errorf("status.clientAuth %q", st.ClientAuth)
		}
		return nil
	})

	// Removed: the rules drop it and its Secret goes.
	if err := update(t, ns, "shop", func(k *kvv1.KeyValueStore) { k.Spec.Clients = k.Spec.Clients[1:] }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the removed client gone", func() error {
		if _, ok := rulesOf(t, ns, "shop")["app"]; ok {
			return fmt.Errorf("app still in the rules")
		}
		if err := get(t, ns, "shop-client-app", &corev1.Secret{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("app's Secret: %v", err)
		}
		return nil
	})
	// Added again: a new certificate, and the old one is refused.
	clock.Advance(time.Minute) // the operator's clock, which the certificates' times come from
	if err := update(t, ns, "shop", func(k *kvv1.KeyValueStore) { k.Spec.Clients = append(k.Spec.Clients, kvv1.ClientSpec{Name: "app"}) }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the client back", func() error {
		a, ok := rulesOf(t, ns, "shop")["app"]
		if !ok || !a.IssuedAfter.After(cert.NotBefore) {
			return fmt.Errorf("app's rule %+v, want issued after the old certificate (%v)", a, cert.NotBefore)
		}
		return nil
	})
}

// A store that runs without client authentication (made before
// spec.clientAuth existed, or with none) keeps running without it while
// the field is unset, and gets it once the field says mtls.
func TestUnsetClientAuthKeepsWhatTheStoreRuns(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, testutil.NewKVS("old", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.ClientAuth = kvv1.ClientAuthNone })); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, "old", sts) })
	if runsMTLS(sts) {
		t.Fatal("clientAuth none: the pods run mtls")
	}
	if err := update(t, ns, "old", func(k *kvv1.KeyValueStore) { k.Spec.ClientAuth = "" }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "old", func(st kvv1.KeyValueStoreStatus) error {
		if st.ClientAuth != "none" {
			return fmt.Errorf("status.clientAuth %q, want none", st.ClientAuth)
		}
		return nil
	})
	time.Sleep(time.Second)
	mustGet(t, ns, "old", sts)
	if runsMTLS(sts) {
		t.Fatal("unset clientAuth turned a running store to mtls")
	}
	// Its StatefulSet made again (a volume growth, or a person): still
	// none, from the mode recorded with the rules. The store is paused
	// meanwhile, so that the StatefulSet is gone when it next looks.
	if err := update(t, ns, "old", func(k *kvv1.KeyValueStore) { k.Spec.Paused = true }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "old", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhasePaused {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return nil
	})
	if err := k8s.Delete(ctx, sts); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet gone", func() error {
		if err := get(t, ns, "old", &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("StatefulSet: %v", err)
		}
		return nil
	})
	if err := update(t, ns, "old", func(k *kvv1.KeyValueStore) { k.Spec.Paused = false }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet made again", func() error { return get(t, ns, "old", sts) })
	if runsMTLS(sts) {
		t.Fatal("a store that ran without client authentication got it when its StatefulSet was made again: every client locked out")
	}
	if err := update(t, ns, "old", func(k *kvv1.KeyValueStore) { k.Spec.ClientAuth = kvv1.ClientAuthMTLS }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "mtls", func() error {
		mustGet(t, ns, "old", sts)
		if !runsMTLS(sts) || !slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
			return v.ConfigMap != nil && v.ConfigMap.Name == "old-clients"
		}) {
			return fmt.Errorf("pods not set up for mtls")
		}
		return nil
	})
}

// A Secret of the client's name that is not the store's is never taken
// over: the store says why.
func TestClientSecretOfSomebodyElseIsNotTakenOver(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	theirs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s-client-app"}, StringData: map[string]string{"password": "x"}}
	if err := k8s.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, testutil.NewKVS("s", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "app"}))); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "s", func(st kvv1.KeyValueStoreStatus) error {
		c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "s-client-app") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	mustGet(t, ns, "s-client-app", theirs)
	if string(theirs.Data["password"]) != "x" || len(theirs.OwnerReferences) != 0 {
		t.Fatalf("somebody else's Secret was changed: %v %v", theirs.Data, theirs.OwnerReferences)
	}
}

// ConfigMaps and NetworkPolicies of the operator's names that the store
// does not own are not taken over (apply would force its fields into
// them and make them the store's, deleted with it).
func TestObjectsOfSomebodyElseAreNotTakenOver(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "o-ca"}, Data: map[string]string{"ca.crt": "mine"}}
	if err := k8s.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, testutil.NewKVS("o", testutil.InNamespace(ns))); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "o", func(st kvv1.KeyValueStoreStatus) error {
		c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "ConfigMap o-ca exists and is not this store's") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	mustGet(t, ns, "o-ca", theirs)
	if theirs.Data["ca.crt"] != "mine" || len(theirs.OwnerReferences) != 0 {
		t.Fatalf("somebody else's ConfigMap was changed: %v %v", theirs.Data, theirs.OwnerReferences)
	}
}

// spec.networkPolicy admits the clients, the operator, the members and
// backup Jobs to the API port, only the members to the Raft port, and the
// clients and from to the gRPC port; turned off, the policy goes.
func TestNetworkPolicy(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	k := testutil.NewKVS("np", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "app"}, kvv1.ClientSpec{Name: "web", PodSelector: web}),
		func(k *kvv1.KeyValueStore) {
			k.Spec.NetworkPolicy = &kvv1.NetworkPolicySpec{Enabled: true, From: []kvv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": "monitoring"}}}}}
		})
	if err := k8s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{}
	testutil.Eventually(t, 20*time.Second, "the NetworkPolicy", func() error { return get(t, ns, "np", np) })
	if len(np.Spec.Ingress) != 3 {
		t.Fatalf("ingress rules %+v", np.Spec.Ingress)
	}
	api, raft, grpc := np.Spec.Ingress[0], np.Spec.Ingress[1], np.Spec.Ingress[2]
	if api.Ports[0].Port.IntValue() != kvv1.APIPort || raft.Ports[0].Port.IntValue() != kvv1.PeerPort || grpc.Ports[0].Port.IntValue() != kvv1.GRPCPort {
		t.Fatalf("ports %v %v %v", api.Ports, raft.Ports, grpc.Ports)
	}
	if len(grpc.From) != 3 { // app, web, monitoring
		t.Errorf("the gRPC port admits %+v, want the clients and from", grpc.From)
	}
	if len(raft.From) != 1 || raft.From[0].PodSelector.MatchLabels["app.kubernetes.io/instance"] != "np" || raft.From[0].NamespaceSelector != nil {
		t.Errorf("the Raft port admits %+v, want the members only", raft.From)
	}
	var admitted []string
	for _, p := range api.From {
		b, _ := json.Marshal(p)
		admitted = append(admitted, string(b))
	}
	all := strings.Join(admitted, "\n")
	for _, want := range []string{`"kv.kvstore.dev/client":"app"`, `"app":"web"`, `"name":"monitoring"`, `"kv.kvstore.dev/store":"np"`, `"app.kubernetes.io/instance":"np"`} {
		if !strings.Contains(all, want) {
			t.Errorf("the API port does not admit %s:\n%s", want, all)
		}
	}
	if err := update(t, ns, "np", func(k *kvv1.KeyValueStore) { k.Spec.NetworkPolicy.Enabled = false }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the NetworkPolicy gone", func() error {
		if err := get(t, ns, "np", np); !apierrors.IsNotFound(err) {
			return fmt.Errorf("NetworkPolicy: %v", err)
		}
		return nil
	})
}

func TestCRDRejectsBadClients(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		kvs  *kvv1.KeyValueStore
		want string
	}{
		{"a name that is no DNS label", testutil.NewKVS("c1", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "App_1"})), "spec.clients[0].name"},
		{"a client twice", testutil.NewKVS("c2", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "a"}, kvv1.ClientSpec{Name: "a"})), "Duplicate value"},
		{"an unknown access", testutil.NewKVS("c3", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "a", Access: "admin"})), "spec.clients[0].access"},
		{"an unknown mode", testutil.NewKVS("c4", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.ClientAuth = "tls" }), "spec.clientAuth"},
		{"an empty peer", testutil.NewKVS("c5", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
			k.Spec.NetworkPolicy = &kvv1.NetworkPolicySpec{Enabled: true, From: []kvv1.NetworkPolicyPeer{{}}}
		}), "each peer needs podSelector or namespaceSelector"},
		{"a negative rate of a client", testutil.NewKVS("c6", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "a", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](-1)}})), "spec.clients[0].limits.requestsPerSecond"},
		{"a client's burst of 0", testutil.NewKVS("c7", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "a"}, kvv1.ClientSpec{Name: "b", Limits: &kvv1.ClientLimits{Burst: ptr.To[int32](0)}})), "spec.clients[1].limits.burst"},
		{"a client's rate over the maximum", testutil.NewKVS("c8", testutil.InNamespace(ns), withClients(kvv1.ClientSpec{Name: "a", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](2000000)}})), "spec.clients[0].limits.requestsPerSecond"},
		{"a negative store rate", testutil.NewKVS("c9", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Limits.RequestsPerSecond = -5 }), "spec.limits.requestsPerSecond"},
		{"a negative store burst", testutil.NewKVS("c10", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Limits.RequestsPerSecond, k.Spec.Limits.Burst = 5, -1 }), "spec.limits.burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.kvs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("created or wrong error: %v (want %q)", err, tc.want)
			}
		})
	}
}

// Rate limits: spec.limits reaches the pods as KV_CLIENT_RATE and
// KV_CLIENT_BURST; a client's own goes with the rules, and a change of it
// leaves the pod template alone (the pods re-read the rules: no restart).
func TestClientRateLimits(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	k := testutil.NewKVS("rated", testutil.InNamespace(ns), withClients(
		kvv1.ClientSpec{Name: "app"},
		kvv1.ClientSpec{Name: "bulk", Limits: &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](5), Burst: ptr.To[int32](20)}},
	), func(k *kvv1.KeyValueStore) { k.Spec.Limits.RequestsPerSecond, k.Spec.Limits.Burst = 100, 200 })
	if err := k8s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{}
	testutil.Eventually(t, 20*time.Second, "the StatefulSet and the rules", func() error {
		if err := get(t, ns, "rated", sts); err != nil {
			return err
		}
		if r := rulesOf(t, ns, "rated"); len(r) != 2 {
			return fmt.Errorf("rules %v", r)
		}
		return nil
	})
	if rate, burst := envOf(sts, "KV_CLIENT_RATE"), envOf(sts, "KV_CLIENT_BURST"); rate != "100" || burst != "200" {
		t.Errorf("KV_CLIENT_RATE=%q KV_CLIENT_BURST=%q, want 100 and 200", rate, burst)
	}
	rules := rulesOf(t, ns, "rated")
	if a := rules["app"]; a.RequestsPerSecond != nil || a.Burst != nil {
		t.Errorf("app has limits of its own: %v %v", a.RequestsPerSecond, a.Burst)
	}
	if b := rules["bulk"]; b.RequestsPerSecond == nil || *b.RequestsPerSecond != 5 || b.Burst == nil || *b.Burst != 20 {
		t.Errorf("bulk's rule %+v", b)
	}
	template := sts.Spec.Template.DeepCopy()

	if err := update(t, ns, "rated", func(k *kvv1.KeyValueStore) {
		k.Spec.Clients[0].Limits = &kvv1.ClientLimits{RequestsPerSecond: ptr.To[int32](0)}
		k.Spec.Clients[1].Limits = nil
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the new limits in the rules", func() error {
		r := rulesOf(t, ns, "rated")
		if a := r["app"]; a.RequestsPerSecond == nil || *a.RequestsPerSecond != 0 {
			return fmt.Errorf("app's rule %+v, want unlimited of its own", a)
		}
		if b := r["bulk"]; b.RequestsPerSecond != nil || b.Burst != nil {
			return fmt.Errorf("bulk's rule %+v, want the store's limits", b)
		}
		return nil
	})
	mustGet(t, ns, "rated", sts)
	if !equality.Semantic.DeepEqual(*template, sts.Spec.Template) {
		t.Error("a client's limits changed the pod template: the pods would restart")
	}
}
