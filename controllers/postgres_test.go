package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// postgresLog puts the store's log in PostgreSQL: the database kv on
// pg.db.svc, with the credentials of Secret kv-db; with a CA, verified
// (verify-full) against Secret pg-ca.
func postgresLog(ca bool) testutil.Option {
	return func(k *kvv1.KeyValueStore) {
		k.Spec.Log = kvv1.LogSpec{Type: kvv1.LogPostgres, Postgres: &kvv1.PostgresLogSpec{
			Host: "pg.db.svc", Database: "kv", SecretRef: corev1.LocalObjectReference{Name: "kv-db"},
		}}
		if ca {
			k.Spec.Log.Postgres.SSLMode = "verify-full"
			k.Spec.Log.Postgres.CASecretRef = &corev1.LocalObjectReference{Name: "pg-ca"}
		}
	}
}

// pgSpec is spec.log for postgres as a manifest has it, with changes.
func pgSpec(change func(pg map[string]any)) map[string]any {
	pg := map[string]any{"host": "pg.db.svc", "database": "kv", "secretRef": map[string]any{"name": "kv-db"}}
	if change != nil {
		change(pg)
	}
	return map[string]any{"type": "postgres", "postgres": pg}
}

// A store whose log is in PostgreSQL runs as a Deployment, not a
// StatefulSet: its pods get the database from spec.log.postgres, the
// credentials by reference to the user's Secret, the CA mounted, and
// nothing of Raft (no data volume, no peer port or Service, no
// membership calls).
func TestPostgresStoreRunsADeployment(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	// The user's Secret: the operator never reads it, the kubelet does.
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kv-db"}, StringData: map[string]string{"username": "kv", "password": "not-in-the-template"}}
	if err := k8s.Create(ctx, creds); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, testutil.NewKVS("pg", testutil.InNamespace(ns), postgresLog(true))); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	testutil.Eventually(t, 20*time.Second, "the Deployment", func() error { return get(t, ns, "pg", dep) })
	if refs := dep.OwnerReferences; len(refs) != 1 || refs[0].Kind != "KeyValueStore" || refs[0].Name != "pg" || !*refs[0].Controller {
		t.Fatalf("owner references %+v", refs)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Fatalf("replicas %v, want spec.replicas' default 3", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Contains(c.Args, "--log=postgres") || !slices.Contains(c.Args, "--client-auth=mtls") {
		t.Errorf("args %v", c.Args)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--data-dir") || strings.HasPrefix(a, "--peer-") || strings.HasPrefix(a, "--bootstrap") || strings.HasPrefix(a, "--api-advertise") {
			t.Errorf("a Raft flag: %s", a)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		if strings.Contains(e.Value, "not-in-the-template") {
			t.Errorf("%s holds the password", e.Name)
		}
		if strings.HasPrefix(e.Name, "KV_PEER_") || e.Name == "KV_DATA_DIR" || e.Name == "KV_BOOTSTRAP" || e.Name == "KV_API_ADVERTISE" {
			t.Errorf("a Raft variable: %s", e.Name)
		}
	}
	for name, want := range map[string]string{
		"TLOG_DB_HOST": "pg.db.svc", "TLOG_DB_PORT": "5432", "TLOG_DB_DATABASE": "kv", "TLOG_DB_SSLMODE": "verify-full",
		"TLOG_DB_STORE": ns + "/pg", "TLOG_DB_CA": "/etc/kvnode/postgres-ca/ca.crt",
	} {
		if e := env[name]; e.Value != want {
			t.Errorf("%s=%q, want %q", name, e.Value, want)
		}
	}
	for name, key := range map[string]string{"TLOG_DB_USERNAME": "username", "TLOG_DB_PASSWORD": "password"} {
		if e := env[name]; e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "kv-db" || e.ValueFrom.SecretKeyRef.Key != key {
			t.Errorf("%s = %+v, want key %s of Secret kv-db", name, e, key)
		}
	}
	for _, v := range pod.Volumes {
		if !slices.Contains([]string{"tls", "tmp", "access", "postgres-ca"}, v.Name) || v.PersistentVolumeClaim != nil {
			t.Errorf("volume %+v: only TLS, the access rules, the CA and scratch space", v)
		}
		if v.Name == "postgres-ca" && (v.Secret == nil || v.Secret.SecretName != "pg-ca") {
			t.Errorf("the CA volume %+v", v)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "postgres-ca" && m.MountPath == "/etc/kvnode/postgres-ca" && m.ReadOnly
	}) {
		t.Errorf("mounts %+v lack the CA", c.VolumeMounts)
	}
	for _, p := range c.Ports {
		if p.Name == "peer" {
			t.Errorf("a peer port %+v", p)
		}
	}
	svc := &corev1.Service{}
	testutil.Eventually(t, 20*time.Second, "the client Service and the PodDisruptionBudget", func() error {
		if err := get(t, ns, "pg", svc); err != nil {
			return err
		}
		return get(t, ns, "pg", &policyv1.PodDisruptionBudget{})
	})
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Name != "api" || svc.Spec.Selector["app.kubernetes.io/instance"] != "pg" {
		t.Errorf("client Service %+v", svc.Spec)
	}
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseCreating || st.Endpoint != "https://pg."+ns+".svc:8080" || st.ObservedGeneration == 0 || st.Ready != "0/3" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// Nothing of Raft was made, or asked of the kvnodes.
	if err := get(t, ns, "pg", &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("a StatefulSet: %v", err)
	}
	if err := get(t, ns, "pg-peers", &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("a headless Service: %v", err)
	}
	if calls := fakeKV.calls(ns + "/pg"); len(calls) != 0 {
		t.Errorf("membership calls %v", calls)
	}
}

// The CRD's rules on spec.log, as kubectl apply meets them: each
// rejection names the field.
func TestCRDLogRules(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	for _, tc := range []struct {
		name  string
		spec  map[string]any
		field string
		want  string // "" when accepted
	}{
		{"postgres without its block", map[string]any{"log": map[string]any{"type": "postgres"}}, "spec.log.postgres", "log.postgres is required when log.type is postgres"},
		{"the block with raft", map[string]any{"log": map[string]any{"type": "raft", "postgres": pgSpec(nil)["postgres"]}}, "spec.log.postgres", "log.postgres may be set only when log.type is postgres"},
		{"the block with the type unset", map[string]any{"log": map[string]any{"postgres": pgSpec(nil)["postgres"]}}, "spec.log.postgres", "log.postgres may be set only when log.type is postgres"},
		{"verify-full without a CA", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["sslMode"] = "verify-full" })}, "spec.log.postgres.caSecretRef", "caSecretRef is required with sslMode verify-ca or verify-full"},
		{"verify-ca without a CA", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["sslMode"] = "verify-ca" })}, "spec.log.postgres.caSecretRef", "caSecretRef is required with sslMode verify-ca or verify-full"},
		{"an sslMode libpq has but the CRD not", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["sslMode"] = "prefer" })}, "spec.log.postgres.sslMode", `"verify-full"`},
		{"no host", map[string]any{"log": pgSpec(func(pg map[string]any) { delete(pg, "host") })}, "spec.log.postgres.host", "Required"},
		{"an empty database", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["database"] = "" })}, "spec.log.postgres.database", ""},
		{"no secret name", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["secretRef"] = map[string]any{} })}, "spec.log.postgres.secretRef", "log.postgres.secretRef.name is required"},
		{"port 0", map[string]any{"log": pgSpec(func(pg map[string]any) { pg["port"] = int64(0) })}, "spec.log.postgres.port", ""},
		{"an unknown type", map[string]any{"log": map[string]any{"type": "etcd"}}, "spec.log.type", `"postgres"`},
		{"scheduled backups", map[string]any{"log": pgSpec(nil), "backup": map[string]any{"schedule": "0 3 * * *"}}, "spec.backup", "PostgreSQL's own backups"},
		{"a restore", map[string]any{"log": pgSpec(nil), "restore": map[string]any{"backupName": "b1"}}, "spec.restore", "PostgreSQL's own backups"},
		{"the database's variables in spec.pod.env", map[string]any{"log": pgSpec(nil), "pod": map[string]any{"env": []any{map[string]any{"name": "TLOG_DB_PASSWORD", "value": "x"}}}}, "spec.pod.env", "may not set a variable the operator sets"},
		{"a volume named as the CA's", map[string]any{"log": pgSpec(nil), "pod": map[string]any{"volumes": []any{map[string]any{"name": "postgres-ca", "emptyDir": map[string]any{}}}}}, "spec.pod.volumes", "postgres-ca"},
		{"postgres", map[string]any{"log": pgSpec(nil)}, "", ""},
		{"verified", map[string]any{"log": pgSpec(func(pg map[string]any) {
			pg["sslMode"], pg["caSecretRef"], pg["port"] = "verify-ca", map[string]any{"name": "pg-ca"}, int64(6432)
		})}, "", ""},
		{"raft", map[string]any{"log": map[string]any{"type": "raft"}}, "", ""},
		{"unset", map[string]any{}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, rawSpecKVS(ns, "log-"+strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), "'", ""), tc.spec))
			if tc.field != "" {
				want := []string{tc.field}
				if tc.want != "" {
					want = append(want, tc.want)
				}
				rejected(t, err, want...)
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
	// The defaults: raft for a store that says nothing, port 5432 and
	// sslMode require for postgres.
	got := &kvv1.KeyValueStore{}
	mustGet(t, ns, "log-unset", got)
	if got.Spec.Log.Type != kvv1.LogRaft || got.Spec.Log.Postgres != nil {
		t.Errorf("an unset spec.log read back as %+v", got.Spec.Log)
	}
	mustGet(t, ns, "log-postgres", got)
	if pg := got.Spec.Log.Postgres; pg == nil || pg.Port != 5432 || pg.SSLMode != "require" {
		t.Errorf("spec.log.postgres read back as %+v", pg)
	}

	// The type never changes, either way; the database may.
	err := update(t, ns, "log-unset", func(k *kvv1.KeyValueStore) { postgresLog(false)(k) })
	rejected(t, err, "spec.log.type", "log.type is immutable: a store cannot change its log type")
	err = update(t, ns, "log-postgres", func(k *kvv1.KeyValueStore) { k.Spec.Log = kvv1.LogSpec{Type: kvv1.LogRaft} })
	rejected(t, err, "spec.log.type", "log.type is immutable")
	err = update(t, ns, "log-postgres", func(k *kvv1.KeyValueStore) { k.Spec.Log.Postgres.Host = "pg2.db.svc" })
	rejected(t, err, "spec.log.postgres.host", "log.postgres.host is immutable")
	err = update(t, ns, "log-postgres", func(k *kvv1.KeyValueStore) { k.Spec.Log.Postgres.Database = "other" })
	rejected(t, err, "spec.log.postgres.database", "log.postgres.database is immutable")
	if err := update(t, ns, "log-postgres", func(k *kvv1.KeyValueStore) { k.Spec.Log.Postgres.SecretRef.Name = "rotated" }); err != nil {
		t.Errorf("new credentials: %v", err)
	}
}

// setDeploymentStatus plays the Deployment controller and kubelet, which
// envtest lacks: the Deployment has seen its spec and has n pods on its
// template, ready of them ready.
func setDeploymentStatus(t *testing.T, ns, name string, n, ready int32) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the Deployment's status", func() error {
		d := &appsv1.Deployment{}
		if err := get(t, ns, name, d); err != nil {
			return err
		}
		d.Status.ObservedGeneration = d.Generation
		d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = n, n, ready, ready
		return k8s.Status().Update(context.Background(), d)
	})
}

// Ready follows the Deployment: spec.replicas ready pods on a Deployment
// whose controller has seen its spec. A scale-up is a planned change
// (Scaling), not a fault; status never reports voters or a leader.
func TestPostgresStoreTurnsReadyWithTheDeployment(t *testing.T) {
	ns := namespace(t)
	if err := k8s.Create(context.Background(), testutil.NewKVS("pg", testutil.InNamespace(ns), testutil.WithReplicas(2), postgresLog(false))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the Deployment", func() error { return get(t, ns, "pg", &appsv1.Deployment{}) })
	setDeploymentStatus(t, ns, "pg", 2, 1)
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		r := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
		if st.Phase != kvv1.PhaseCreating || st.Ready != "1/2" || r == nil || r.Status != metav1.ConditionFalse || r.Reason != kvv1.ReasonCreating || !strings.Contains(r.Message, "1/2 pods ready") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	setDeploymentStatus(t, ns, "pg", 2, 2)
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		r := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
		if st.Phase != kvv1.PhaseRunning || st.Ready != "2/2" || st.Replicas != 2 || st.ReadyReplicas != 2 || r == nil || r.Status != metav1.ConditionTrue ||
			!strings.Contains(r.Message, "database kv on pg.db.svc") || meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionDegraded) {
			return fmt.Errorf("status %+v", st)
		}
		if st.Voters != 0 || st.Leader != "" || len(st.Members) != 0 || st.Bootstrapped || st.ClusterID != "" {
			return fmt.Errorf("Raft in the status of a postgres store: %+v", st)
		}
		return nil
	})

	// kubectl scale: the Deployment follows, and until its pods are
	// ready the store is Scaling, not Creating again, nor Degraded.
	scale(t, ns, "pg", 3)
	testutil.Eventually(t, 20*time.Second, "the Deployment at 3", func() error {
		d := &appsv1.Deployment{}
		mustGet(t, ns, "pg", d)
		if *d.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	setDeploymentStatus(t, ns, "pg", 3, 2)
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		r := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
		if st.Phase != kvv1.PhaseScaling || r == nil || r.Status != metav1.ConditionFalse || r.Reason != kvv1.ReasonPodsNotReady ||
			!meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionProgressing) || meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionDegraded) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	setDeploymentStatus(t, ns, "pg", 3, 3)
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Ready != "3/3" || !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	// A new image: until the Deployment's controller has seen it, the
	// ready pods are the old image's, and the store is not Ready at the
	// new generation (tools wait on observedGeneration and Ready).
	if err := update(t, ns, "pg", func(k *kvv1.KeyValueStore) { k.Spec.Image = "kvstore.dev/kvnode:next" }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		k := &kvv1.KeyValueStore{}
		mustGet(t, ns, "pg", k)
		if k.Status.ObservedGeneration == k.Generation && meta.IsStatusConditionTrue(k.Status.Conditions, kvv1.ConditionReady) {
			t.Fatalf("Ready at generation %d before the Deployment saw the new image: %+v", k.Generation, k.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	setDeploymentStatus(t, ns, "pg", 3, 3)
	waitStatus(t, ns, "pg", func(st kvv1.KeyValueStoreStatus) error {
		if !meta.IsStatusConditionTrue(st.Conditions, kvv1.ConditionReady) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// With autoscaling the HPA scales the Deployment, from spec.replicas up,
// and the operator leaves the count to it.
func TestPostgresStoreAutoscalesTheDeployment(t *testing.T) {
	ns := namespace(t)
	if err := k8s.Create(context.Background(), testutil.NewKVS("pg", testutil.InNamespace(ns), testutil.WithReplicas(2), testutil.WithAutoscaling(2, 6), postgresLog(false))); err != nil {
		t.Fatal(err)
	}
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	testutil.Eventually(t, 20*time.Second, "the HPA", func() error { return get(t, ns, "pg", h) })
	if r := h.Spec.ScaleTargetRef; r.Kind != "Deployment" || r.Name != "pg" || *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 6 {
		t.Fatalf("HPA %+v", h.Spec)
	}
	d := &appsv1.Deployment{}
	testutil.Eventually(t, 20*time.Second, "the Deployment at the HPA's minimum", func() error {
		if err := get(t, ns, "pg", d); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			return fmt.Errorf("replicas %v, want 2", d.Spec.Replicas)
		}
		for _, mf := range d.ManagedFields {
			if mf.Manager == FieldOwner && strings.Contains(mf.FieldsV1.GetRawString(), `"f:replicas"`) {
				return fmt.Errorf("the operator owns spec.replicas of an autoscaled Deployment")
			}
		}
		return nil
	})
}

// Turning autoscaling on for a store that runs keeps its pods: the count
// the operator applied is handed over, not reset to the default of 1.
func TestTurningAutoscalingOnKeepsThePods(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kvs := testutil.NewKVS("pg", testutil.InNamespace(ns), testutil.WithReplicas(3), postgresLog(false))
	if err := k8s.Create(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	testutil.Eventually(t, 20*time.Second, "the Deployment at 3", func() error {
		if err := get(t, ns, "pg", d); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %v", d.Spec.Replicas)
		}
		return nil
	})
	if err := get(t, ns, "pg", kvs); err != nil {
		t.Fatal(err)
	}
	testutil.WithAutoscaling(3, 6)(kvs)
	if err := k8s.Update(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the HPA", func() error { return get(t, ns, "pg", &autoscalingv2.HorizontalPodAutoscaler{}) })
	// Long enough for a few reconciles.
	for range 20 {
		if err := get(t, ns, "pg", d); err != nil {
			t.Fatal(err)
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
			t.Fatalf("autoscaling turned on: the Deployment's replicas went from 3 to %v", d.Spec.Replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A backup of a postgres store is refused for good, saying why, and no
// Job or claim is made for it.
func TestBackupOfAPostgresStoreIsRefused(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	if err := k8s.Create(ctx, testutil.NewKVS("pg", testutil.InNamespace(ns), postgresLog(false))); err != nil {
		t.Fatal(err)
	}
	b := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "pg"}}
	if err := k8s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	waitBackup(t, ns, "b1", func(b *kvv1.KeyValueStoreBackup) error {
		c := meta.FindStatusCondition(b.Status.Conditions, kvv1.BackupConditionFailed)
		if b.Status.Phase != kvv1.BackupFailed || c == nil || c.Reason != kvv1.BackupReasonPostgresLog ||
			!strings.Contains(b.Status.Message, "its backups are PostgreSQL's own") || b.Status.Job != "" {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})
	if err := get(t, ns, "b1-backup", &batchv1.Job{}); !apierrors.IsNotFound(err) {
		t.Errorf("a backup Job: %v", err)
	}
	if err := get(t, ns, kvv1.BackupClaimName("pg"), &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
		t.Errorf("a backup claim: %v", err)
	}
	if !recorder.has("b1 BackupRefused") {
		t.Errorf("no BackupRefused event: %v", recorder.events)
	}
}

// The sample manifest is one the API server accepts as it stands.
func TestPostgresSampleIsValid(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "samples", "postgres", "kv_v1alpha1_keyvaluestore_postgres.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(namespace(t))
	if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
		t.Fatalf("the sample is refused: %v", err)
	}
	if typ, _, _ := unstructured.NestedString(u.Object, "spec", "log", "type"); typ != "postgres" {
		t.Fatalf("the sample's spec.log.type is %q", typ)
	}
}
