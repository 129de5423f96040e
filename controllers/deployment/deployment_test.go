package deployment

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// withPostgres puts the store's log in PostgreSQL, as a user would.
func withPostgres(ca bool) testutil.Option {
	return func(k *kvv1.KeyValueStore) {
		k.Spec.Log = kvv1.LogSpec{Type: kvv1.LogPostgres, Postgres: &kvv1.PostgresLogSpec{
			Host: "pg.db.svc", Port: 5433, Database: "kv", SSLMode: "require",
			SecretRef: corev1.LocalObjectReference{Name: "kv-db"},
		}}
		if ca {
			k.Spec.Log.Postgres.SSLMode = "verify-full"
			k.Spec.Log.Postgres.CASecretRef = &corev1.LocalObjectReference{Name: "pg-ca"}
		}
	}
}

func TestBuild(t *testing.T) {
	testutil.Golden(t, "postgres", Build(testutil.StoredKVS("demo", withPostgres(false)), ptr.To[int32](3)))
	k := testutil.StoredKVS("demo", withPostgres(true))
	k.Status.ClientAuth = kvv1.ClientAuthMTLS
	testutil.Golden(t, "postgres-ca-mtls", Build(k, nil))
}

// The contract with kvnode: --log=postgres, the database in TLOG_DB_*
// variables, the credentials by reference to the user's Secret, and
// nothing of Raft: no data directory, no peer port, address or
// certificate, no bootstrap mode.
func TestBuildTalksToPostgresOnly(t *testing.T) {
	k := testutil.StoredKVS("demo", withPostgres(true))
	k.Namespace = "shop"
	d := Build(k, ptr.To[int32](3))
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Contains(c.Args, "--log=postgres") {
		t.Errorf("args %v lack --log=postgres", c.Args)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--data-dir") || strings.HasPrefix(a, "--peer-") || strings.HasPrefix(a, "--bootstrap") || strings.HasPrefix(a, "--api-advertise") {
			t.Errorf("a Raft flag in args: %s", a)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		if strings.HasPrefix(e.Name, "KV_PEER_") || e.Name == "KV_DATA_DIR" || e.Name == "KV_BOOTSTRAP" || e.Name == "KV_API_ADVERTISE" {
			t.Errorf("a Raft variable: %s", e.Name)
		}
		if strings.Contains(e.Value, "password") {
			t.Errorf("%s=%q: no secret goes into the template", e.Name, e.Value)
		}
	}
	for name, want := range map[string]string{
		"TLOG_DB_HOST": "pg.db.svc", "TLOG_DB_PORT": "5433", "TLOG_DB_DATABASE": "kv", "TLOG_DB_SSLMODE": "verify-full",
		"TLOG_DB_STORE": "shop/demo", "TLOG_DB_CA": "/etc/kvnode/postgres-ca/ca.crt",
	} {
		if got, ok := env[name]; !ok || got.Value != want || got.ValueFrom != nil {
			t.Errorf("%s = %+v, want %q", name, got, want)
		}
	}
	for name, key := range map[string]string{"TLOG_DB_USERNAME": "username", "TLOG_DB_PASSWORD": "password"} {
		e := env[name]
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "kv-db" || e.ValueFrom.SecretKeyRef.Key != key {
			t.Errorf("%s = %+v, want the key %s of Secret kv-db", name, e, key)
		}
	}
	for _, p := range c.Ports {
		if p.Name == "peer" {
			t.Errorf("a peer port: %+v", p)
		}
	}
	var vols []string
	for _, v := range pod.Volumes {
		vols = append(vols, v.Name)
		if v.PersistentVolumeClaim != nil {
			t.Errorf("a claim: %+v", v)
		}
	}
	if !slices.Equal(vols, []string{"tls", "tmp", "postgres-ca"}) {
		t.Errorf("volumes %v", vols)
	}
	ca := pod.Volumes[2].Secret
	if ca == nil || ca.SecretName != "pg-ca" || len(ca.Items) != 1 || ca.Items[0].Key != "ca.crt" {
		t.Errorf("the CA volume %+v", pod.Volumes[2])
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "postgres-ca" && (m.MountPath != "/etc/kvnode/postgres-ca" || !m.ReadOnly) {
			t.Errorf("the CA mount %+v", m)
		}
	}
	if *d.Spec.Replicas != 3 || d.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "demo" {
		t.Errorf("replicas %d, selector %v", *d.Spec.Replicas, d.Spec.Selector)
	}

	// Without a CA: no CA variable, mount or volume; sslMode's default.
	k = testutil.StoredKVS("demo", withPostgres(false), func(k *kvv1.KeyValueStore) { k.Spec.Log.Postgres.SSLMode, k.Spec.Log.Postgres.Port = "", 0 })
	c = Build(k, ptr.To[int32](1)).Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		switch {
		case e.Name == "TLOG_DB_CA":
			t.Errorf("TLOG_DB_CA without a CA Secret")
		case e.Name == "TLOG_DB_SSLMODE" && e.Value != "require", e.Name == "TLOG_DB_PORT" && e.Value != "5432":
			t.Errorf("%s=%q, want the default", e.Name, e.Value)
		}
	}
	if len(c.VolumeMounts) != 2 {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
}

// A rollout keeps capacity (a pod more first), except where required
// anti-affinity may leave no node for a pod more.
func TestBuildStrategy(t *testing.T) {
	d := Build(testutil.StoredKVS("demo", withPostgres(false)), ptr.To[int32](3))
	if r := d.Spec.Strategy.RollingUpdate; r.MaxSurge.IntValue() != 1 || r.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy %+v", r)
	}
	d = Build(testutil.StoredKVS("demo", withPostgres(false), func(k *kvv1.KeyValueStore) { k.Spec.AntiAffinity = kvv1.AntiAffinityRequired }), ptr.To[int32](3))
	if r := d.Spec.Strategy.RollingUpdate; r.MaxSurge.IntValue() != 0 || r.MaxUnavailable.IntValue() != 1 {
		t.Errorf("strategy with required anti-affinity %+v", r)
	}
}
