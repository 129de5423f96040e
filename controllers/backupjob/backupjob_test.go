package backupjob

import (
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

func TestLocation(t *testing.T) {
	s3 := kvv1.BackupDestination{S3: &kvv1.S3Destination{Bucket: "bkt", Prefix: "/team/a/"}}
	for _, tc := range []struct {
		dest      kvv1.BackupDestination
		scheduled bool
		want      string
	}{
		{kvv1.BackupDestination{}, false, "file:///backups/shop/b1.kvbackup"},
		{kvv1.BackupDestination{}, true, "file:///backups/shop/scheduled/u-1/b1.kvbackup"},
		// A bucket is shared by namespaces: the key names the store's.
		{s3, false, "s3://bkt/team/a/ns1/shop/b1.kvbackup"},
		{kvv1.BackupDestination{S3: &kvv1.S3Destination{Bucket: "bkt"}}, true, "s3://bkt/ns1/shop/scheduled/u-1/b1.kvbackup"},
	} {
		if got := Location(tc.dest, "ns1", "shop", "u-1", "b1", tc.scheduled); got != tc.want {
			t.Errorf("Location(%+v, %v) = %q, want %q", tc.dest, tc.scheduled, got, tc.want)
		}
	}
}

func terminated(code int32, msg string, at time.Time) corev1.Pod {
	return corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Message: msg, FinishedAt: metav1.NewTime(at),
	}}}}}}
}

func TestObserve(t *testing.T) {
	now := time.Now()
	complete := &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}
	failed := &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "limit"}}}}
	// A retried Job: a failed attempt, then a success. The success counts.
	o := Observe(complete, []corev1.Pod{
		terminated(1, `{"location":"file:///b","error":"leader changed"}`, now.Add(-time.Minute)),
		terminated(0, `{"location":"file:///b","keys":7,"index":9}`, now),
	})
	if !o.Done || o.Failed || o.Result.Keys != 7 || o.Result.Index != 9 || o.Result.Error != "" {
		t.Fatalf("complete: %+v", o)
	}
	// Failed: the newest attempt's error is the message.
	o = Observe(failed, []corev1.Pod{
		terminated(1, `{"location":"file:///b","error":"first"}`, now.Add(-time.Minute)),
		terminated(1, `{"location":"file:///b","error":"backup: corrupt: checksum mismatch"}`, now),
	})
	if !o.Done || !o.Failed || o.Message != "backup: corrupt: checksum mismatch" {
		t.Fatalf("failed: %+v", o)
	}
	// A crash before any result: the end of the log, not JSON.
	o = Observe(failed, []corev1.Pod{terminated(2, "starting\npanic: boom", now)})
	if o.Message != "panic: boom" {
		t.Fatalf("log fallback: %+v", o)
	}
	// Still running.
	if o := Observe(&batchv1.Job{}, nil); o.Done {
		t.Fatalf("running: %+v", o)
	}
}
