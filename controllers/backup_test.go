package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/backup"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

// finishJob plays the Job controller and kubelet, which envtest lacks: a
// pod of the Job that ended with msg as its termination message, then the
// Job's terminal conditions.
func finishJob(t *testing.T, ns, name string, ok bool, msg string) {
	t.Helper()
	ctx := context.Background()
	job := &batchv1.Job{}
	testutil.Eventually(t, 20*time.Second, "the Job", func() error { return get(t, ns, name, job) })
	// The Job controller's pods carry the template's labels and the Job's name.
	labels := map[string]string{batchv1.JobNameLabel: name}
	for k, v := range job.Spec.Template.Labels {
		labels[k] = v
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-x1", Labels: labels},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "kvnode", Image: "kvstore.dev/kvnode:dev"}}},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	code, phase := int32(0), corev1.PodSucceeded
	if !ok {
		code, phase = 1, corev1.PodFailed
	}
	p.Status.Phase = phase
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "kvnode", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Message: msg, FinishedAt: metav1.Now(),
	}}}}
	if err := k8s.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	job.Status.StartTime = &now
	if ok {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
	} else {
		job.Status.Failed = 4
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
		}
	}
	if err := k8s.Status().Update(ctx, job); err != nil {
		t.Fatalf("job status: %v", err)
	}
}

func resultJSON(r backup.Result) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// runningStore makes a store with a leader, as the other tests do.
func runningStore(t *testing.T, ns, name string, opts ...testutil.Option) {
	t.Helper()
	if err := k8s.Create(context.Background(), testutil.NewKVS(name, append([]testutil.Option{testutil.InNamespace(ns)}, opts...)...)); err != nil {
		t.Fatal(err)
	}
	runPods(t, ns, name, 3)
	waitStatus(t, ns, name, func(st kvv1.KeyValueStoreStatus) error {
		if st.Phase != kvv1.PhaseRunning || st.Leader == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

func waitBackup(t *testing.T, ns, name string, check func(*kvv1.KeyValueStoreBackup) error) *kvv1.KeyValueStoreBackup {
	t.Helper()
	b := &kvv1.KeyValueStoreBackup{}
	testutil.Eventually(t, 30*time.Second, "the backup's status", func() error {
		if err := get(t, ns, name, b); err != nil {
			return err
		}
		return check(b)
	})
	return b
}

// A backup runs as a Job that mounts the admin certificate and the
// default claim (made if missing, owned by nothing), and its status is
// what the Job reported.
func TestBackupToAVolumeRecordsTheJobsResult(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	b := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "shop"}}
	if err := k8s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Before the store exists: pending, saying why.
	waitBackup(t, ns, "b1", func(b *kvv1.KeyValueStoreBackup) error {
		if b.Status.Phase != kvv1.BackupPending || !strings.Contains(b.Status.Message, `"shop"`) {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})
	runningStore(t, ns, "shop")
	waitBackup(t, ns, "b1", func(b *kvv1.KeyValueStoreBackup) error {
		if b.Status.Phase != kvv1.BackupRunning || b.Status.Job != "b1-backup" {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})
	job := &batchv1.Job{}
	mustGet(t, ns, "b1-backup", job)
	args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"backup --server https://shop." + ns + ".svc:8080", "--to file:///backups/shop/b1.kvbackup", "--result-file /dev/termination-log"} {
		if !strings.Contains(args, want) {
			t.Fatalf("Job args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "--keep") {
		t.Fatalf("a backup a user asked for prunes: %q", args)
	}
	claims := map[string]string{}
	for _, v := range job.Spec.Template.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			claims[v.Name] = v.PersistentVolumeClaim.ClaimName
		case v.Secret != nil:
			claims[v.Name] = v.Secret.SecretName
		}
	}
	if claims["backups"] != "shop-backups" || claims["admin"] != "shop-admin" {
		t.Fatalf("Job volumes %v", claims)
	}
	if len(job.OwnerReferences) != 1 || job.OwnerReferences[0].Name != "b1" {
		t.Fatalf("Job owners %v", job.OwnerReferences)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	mustGet(t, ns, "shop-backups", pvc)
	if len(pvc.OwnerReferences) != 0 {
		t.Fatalf("the backup claim is owned (%v): it would go with the store", pvc.OwnerReferences)
	}

	finishJob(t, ns, "b1-backup", true, resultJSON(backup.Result{Location: "file:///backups/shop/b1.kvbackup", Size: 12345, SHA256: "ab", ClusterID: "c1", Index: 77, Term: 3, Keys: 10000}))
	got := waitBackup(t, ns, "b1", func(b *kvv1.KeyValueStoreBackup) error {
		if b.Status.Phase != kvv1.BackupSucceeded {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})
	if got.Status.Keys != 10000 || got.Status.RaftIndex != 77 || got.Status.Size != 12345 || got.Status.Location != "file:///backups/shop/b1.kvbackup" ||
		got.Status.CompletionTime == nil || !meta.IsStatusConditionTrue(got.Status.Conditions, kvv1.BackupConditionComplete) {
		t.Fatalf("status %+v", got.Status)
	}
}

// A failed backup says why, in the Job's own words.
func TestFailedBackupSaysWhy(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	runningStore(t, ns, "shop")
	b := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b2"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "shop",
		Destination: kvv1.BackupDestination{S3: &kvv1.S3Destination{Endpoint: "https://s3.example:9000", Bucket: "bkt", Prefix: "team/", CredentialsSecret: "s3creds"}}}}
	if err := k8s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{}
	testutil.Eventually(t, 20*time.Second, "the Job", func() error { return get(t, ns, "b2-backup", job) })
	c := job.Spec.Template.Spec.Containers[0]
	if args := strings.Join(c.Args, " "); !strings.Contains(args, "--to s3://bkt/team/"+ns+"/shop/b2.kvbackup") || !strings.Contains(args, "--s3-endpoint https://s3.example:9000") {
		t.Fatalf("Job args %q", args)
	}
	for _, e := range c.Env {
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "s3creds" {
			t.Fatalf("credentials must come from the Secret, never inline: %+v", e)
		}
	}
	finishJob(t, ns, "b2-backup", false, resultJSON(backup.Result{Location: "s3://bkt/team/" + ns + "/shop/b2.kvbackup", Error: "s3: access denied"}))
	got := waitBackup(t, ns, "b2", func(b *kvv1.KeyValueStoreBackup) error {
		if b.Status.Phase != kvv1.BackupFailed {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})
	if got.Status.Message != "s3: access denied" || !meta.IsStatusConditionTrue(got.Status.Conditions, kvv1.BackupConditionFailed) {
		t.Fatalf("status %+v", got.Status)
	}
}

// A store with spec.restore has its pod 0's volume restored by a Job
// before any pod starts; the StatefulSet comes after, and status says
// where the data came from. A failed restore leaves no StatefulSet and
// says why.
func TestRestoreRunsBeforeThePodsStart(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	src := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nightly"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "old"}}
	if err := k8s.Create(ctx, src); err != nil {
		t.Fatal(err)
	}
	// The backup, done (its store is gone: nothing runs it again).
	testutil.Eventually(t, 20*time.Second, "the backup's status set", func() error {
		if err := get(t, ns, "nightly", src); err != nil {
			return err
		}
		if src.Status.Phase == kvv1.BackupSucceeded {
			return nil
		}
		src.Status = kvv1.KeyValueStoreBackupStatus{Phase: kvv1.BackupSucceeded, Location: "file:///backups/old/nightly.kvbackup", Keys: 10000, RaftIndex: 42}
		if err := k8s.Status().Update(ctx, src); err != nil {
			return err
		}
		return fmt.Errorf("set; check again")
	})
	for _, tc := range []struct {
		store string
		ok    bool
	}{{"fresh", true}, {"broken", false}} {
		kvs := testutil.NewKVS(tc.store, testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Restore = &kvv1.RestoreSource{BackupName: "nightly"} })
		if err := k8s.Create(ctx, kvs); err != nil {
			t.Fatal(err)
		}
		job := &batchv1.Job{}
		testutil.Eventually(t, 20*time.Second, "the restore Job", func() error { return get(t, ns, tc.store+"-restore", job) })
		args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
		for _, want := range []string{"restore --from file:///backups/old/nightly.kvbackup", "--node-id " + tc.store + "-0", "--peer-advertise " + tc.store + "-0." + tc.store + "-peers." + ns + ".svc:8081"} {
			if !strings.Contains(args, want) {
				t.Fatalf("restore Job args %q lack %q", args, want)
			}
		}
		vols := map[string]string{}
		for _, v := range job.Spec.Template.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				vols[v.Name] = v.PersistentVolumeClaim.ClaimName
			}
		}
		if vols["data"] != "data-"+tc.store+"-0" || vols["backups"] != "old-backups" {
			t.Fatalf("restore Job claims %v", vols)
		}
		mustGet(t, ns, "data-"+tc.store+"-0", &corev1.PersistentVolumeClaim{})
		// The Job's pod is no member: the PDB and Services must not select it.
		if l := job.Spec.Template.Labels; l["app.kubernetes.io/instance"] != "" || l["app.kubernetes.io/name"] != "" {
			t.Fatalf("restore pod labels %v carry the members' selector", l)
		}
		if err := get(t, ns, tc.store, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a StatefulSet before the restore finished: %v", err)
		}
		if tc.ok {
			finishJob(t, ns, job.Name, true, resultJSON(backup.Result{Location: "file:///backups/old/nightly.kvbackup", ClusterID: "c-old", Index: 42, Keys: 10000}))
			waitStatus(t, ns, tc.store, func(st kvv1.KeyValueStoreStatus) error {
				if !strings.Contains(st.RestoredFrom, "KeyValueStoreBackup nightly") || !strings.Contains(st.RestoredFrom, "index 42") {
					return fmt.Errorf("status %+v", st)
				}
				return nil
			})
			testutil.Eventually(t, 20*time.Second, "the StatefulSet", func() error { return get(t, ns, tc.store, &appsv1.StatefulSet{}) })
			continue
		}
		finishJob(t, ns, job.Name, false, resultJSON(backup.Result{Location: "file:///backups/old/nightly.kvbackup", Error: "backup: corrupt: checksum mismatch"}))
		waitStatus(t, ns, tc.store, func(st kvv1.KeyValueStoreStatus) error {
			c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
			if st.Phase != kvv1.PhaseDegraded || c == nil || c.Reason != kvv1.ReasonRestoreFailed || !strings.Contains(c.Message, "checksum mismatch") {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
		time.Sleep(2 * time.Second)
		if err := get(t, ns, tc.store, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a StatefulSet after a failed restore: %v", err)
		}
	}
	// A restore names a backup that does not exist: refused in words.
	if err := k8s.Create(ctx, testutil.NewKVS("nobackup", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Restore = &kvv1.RestoreSource{BackupName: "missing"} })); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ns, "nobackup", func(st kvv1.KeyValueStoreStatus) error {
		c := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
		if c == nil || c.Reason != kvv1.ReasonRestoreFailed || !strings.Contains(c.Message, `"missing"`) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// spec.backup.schedule makes one backup per scheduled time, named after
// it, and keeps the newest spec.backup.keep that succeeded.
func TestScheduledBackupsArePruned(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	runningStore(t, ns, "sched", func(k *kvv1.KeyValueStore) {
		k.Spec.Backup = &kvv1.BackupSchedule{Schedule: "*/10 * * * *", Keep: 2}
	})
	list := func() []kvv1.KeyValueStoreBackup {
		l := &kvv1.KeyValueStoreBackupList{}
		if err := k8s.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{kvv1.LabelBackupStore: "sched"}); err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	// The schedule counts from the store's creation, on the API server's
	// clock; the test's schedule clock started with the suite, minutes
	// before: bring it to the creation first, or whether a round finds a
	// due time depends on where the wall clock falls in the */10 cycle.
	created := &kvv1.KeyValueStore{}
	mustGet(t, ns, "sched", created)
	if d := created.CreationTimestamp.Sub(scheduleClock.Now()); d > 0 {
		scheduleClock.Advance(d + time.Second)
	}
	var names []string
	for round := 1; round <= 4; round++ {
		scheduleClock.Advance(10 * time.Minute)
		// A reconcile comes at the requeue; a spec touch brings one now.
		if err := update(t, ns, "sched", func(k *kvv1.KeyValueStore) { k.Spec.PodAnnotations = map[string]string{"round": fmt.Sprint(round)} }); err != nil {
			t.Fatal(err)
		}
		var newest kvv1.KeyValueStoreBackup
		testutil.Eventually(t, 20*time.Second, "a new scheduled backup", func() error {
			for _, b := range list() {
				if b.Labels[kvv1.LabelBackupScheduled] == "true" && !contains(names, b.Name) {
					newest = b
					return nil
				}
			}
			return fmt.Errorf("no new backup after round %d: %v", round, names)
		})
		names = append(names, newest.Name)
		if !strings.HasPrefix(newest.Name, "sched-") || newest.Spec.Store != "sched" {
			t.Fatalf("scheduled backup %s for %s", newest.Name, newest.Spec.Store)
		}
		job := &batchv1.Job{}
		testutil.Eventually(t, 20*time.Second, "the Job", func() error { return get(t, ns, newest.Name+"-backup", job) })
		loc := "file:///backups/sched/scheduled/" + newest.Labels[kvv1.LabelBackupStoreUID] + "/" + newest.Name + ".kvbackup"
		if args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " "); newest.Labels[kvv1.LabelBackupStoreUID] == "" || !strings.Contains(args, "--to "+loc) || !strings.Contains(args, "--keep 2 --keep-prefix sched-") {
			t.Fatalf("scheduled Job args %q", args)
		}
		finishJob(t, ns, job.Name, true, resultJSON(backup.Result{Location: loc, Keys: 1}))
		waitBackup(t, ns, newest.Name, func(b *kvv1.KeyValueStoreBackup) error {
			if b.Status.Phase != kvv1.BackupSucceeded {
				return fmt.Errorf("status %+v", b.Status)
			}
			return nil
		})
	}
	// The next reconcile prunes: the newest two remain.
	if err := update(t, ns, "sched", func(k *kvv1.KeyValueStore) { k.Spec.PodAnnotations = map[string]string{"round": "prune"} }); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "pruning", func() error {
		var left []string
		for _, b := range list() {
			if b.DeletionTimestamp.IsZero() {
				left = append(left, b.Name)
			}
		}
		if len(left) < 2 || !contains(left, names[3]) || !contains(left, names[2]) || contains(left, names[0]) || contains(left, names[1]) {
			return fmt.Errorf("backups left %v of %v", left, names)
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Manifests the backup API must refuse, naming the field.
func TestCRDRejectsBadBackupManifests(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	both := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "both"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "s",
		Destination: kvv1.BackupDestination{Volume: &kvv1.VolumeDestination{}, S3: &kvv1.S3Destination{Endpoint: "https://x", Bucket: "bkt", CredentialsSecret: "c"}}}}
	rejected(t, k8s.Create(ctx, both), "set volume or s3, not both")
	badEndpoint := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ep"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "s",
		Destination: kvv1.BackupDestination{S3: &kvv1.S3Destination{Endpoint: "ftp://x", Bucket: "bkt", CredentialsSecret: "c"}}}}
	rejected(t, k8s.Create(ctx, badEndpoint), "spec.destination.s3.endpoint")
	ok := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ok"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "s"}}
	if err := k8s.Create(ctx, ok); err != nil {
		t.Fatal(err)
	}
	rejected(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := get(t, ns, "ok", ok); err != nil {
			return err
		}
		ok.Spec.Store = "other"
		return k8s.Update(ctx, ok)
	}), "spec is immutable")

	long := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: strings.Repeat("b", 57)}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "s"}}
	rejected(t, k8s.Create(ctx, long), "at most 56 characters")
	rejected(t, k8s.Create(ctx, testutil.NewKVS(strings.Repeat("s", 42), testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
		k.Spec.Backup = &kvv1.BackupSchedule{Schedule: "@daily"}
	})), "at most 41 characters")
	dots := &kvv1.KeyValueStoreBackup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dots"}, Spec: kvv1.KeyValueStoreBackupSpec{Store: "s",
		Destination: kvv1.BackupDestination{S3: &kvv1.S3Destination{Endpoint: "https://x", Bucket: "bkt", Prefix: "a/../b", CredentialsSecret: "c"}}}}
	rejected(t, k8s.Create(ctx, dots), "spec.destination.s3.prefix")
	rejected(t, k8s.Create(ctx, testutil.NewKVS("cron", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
		k.Spec.Backup = &kvv1.BackupSchedule{Schedule: "every day"}
	})), "backup.schedule must be five cron fields")
	rejected(t, k8s.Create(ctx, testutil.NewKVS("two", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) {
		k.Spec.Restore = &kvv1.RestoreSource{BackupName: "b", S3: &kvv1.S3Location{S3Destination: kvv1.S3Destination{Endpoint: "https://x", Bucket: "bkt", CredentialsSecret: "c"}, Key: "k"}}
	})), "restore: set backupName or s3")
	kvs := testutil.NewKVS("later", testutil.InNamespace(ns), func(k *kvv1.KeyValueStore) { k.Spec.Paused = true })
	if err := k8s.Create(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	rejected(t, update(t, ns, "later", func(k *kvv1.KeyValueStore) { k.Spec.Restore = &kvv1.RestoreSource{BackupName: "b"} }), "restore can be set only when the store is created")
}
