package controllers

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/kvnode/clusterapi"
	"github.com/kvstore-operator/kvstore-operator/test/testutil"
)

func TestSetStatus(t *testing.T) {
	healthy := []kvv1.MemberStatus{{Name: "demo-0", Role: clusterapi.RoleVoter, Healthy: true}, {Name: "demo-1", Role: clusterapi.RoleVoter, Healthy: true}, {Name: "demo-2", Role: clusterapi.RoleVoter, Healthy: true}}
	for _, tc := range []struct {
		name         string
		bootstrapped bool
		paused       bool
		obs          observation
		phase        string
		ready        metav1.ConditionStatus
		reason       string
		progressing  metav1.ConditionStatus
		degraded     metav1.ConditionStatus
	}{
		{"creating", false, false, observation{waiting: "waiting for pod demo-0 to run"}, kvv1.PhaseCreating, "False", kvv1.ReasonCreating, "True", "False"},
		{"running", true, false, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true}, kvv1.PhaseRunning, "True", kvv1.ReasonAvailable, "False", "False"},
		{"scaling", true, false, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true, step: "AddNonVoter demo-3"}, kvv1.PhaseScaling, "True", kvv1.ReasonAvailable, "True", "False"},
		{"a member down", true, false, observation{pods: 3, readyPods: 2, voters: 3, leader: "demo-0", members: append(healthy[:2:2], kvv1.MemberStatus{Name: "demo-2", Role: clusterapi.RoleVoter}), reachable: true}, kvv1.PhaseDegraded, "False", kvv1.ReasonMembersUnhealthy, "False", "True"},
		{"no leader", true, false, observation{pods: 3, readyPods: 0, voters: 3, members: healthy, reachable: true}, kvv1.PhaseDegraded, "False", kvv1.ReasonNoLeader, "False", "True"},
		{"unreachable", true, false, observation{pods: 3}, kvv1.PhaseDegraded, "False", kvv1.ReasonClusterUnreachable, "False", "True"},
		{"error", true, false, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true, err: errors.New("apply failed")}, kvv1.PhaseDegraded, "True", kvv1.ReasonAvailable, "False", "True"},
		{"volumes cannot grow", true, false, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true, volumesRefused: "storage class does not allow expansion"}, kvv1.PhaseDegraded, "True", kvv1.ReasonAvailable, "False", "True"},
		{"paused", true, true, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true}, kvv1.PhasePaused, "True", kvv1.ReasonAvailable, "False", "False"},
		// A scale-up to 5: the new members were promoted before they were
		// healthy, and their pods are not ready yet. Planned, not a fault.
		{"scale-up, new voters not healthy yet", true, false, observation{pods: 5, readyPods: 3, voters: 5, leader: "demo-0", members: append(healthy[:3:3], kvv1.MemberStatus{Name: "demo-3", Role: clusterapi.RoleVoter}, kvv1.MemberStatus{Name: "demo-4", Role: clusterapi.RoleNonVoter}), reachable: true}, kvv1.PhaseScaling, "False", kvv1.ReasonScaling, "True", "False"},
		{"members healthy, a pod not counted ready yet", true, false, observation{pods: 3, readyPods: 2, voters: 3, leader: "demo-0", members: healthy, reachable: true}, kvv1.PhaseScaling, "False", kvv1.ReasonScaling, "True", "False"},
		{"a step failed", true, false, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true, step: "AddNonVoter demo-3", waiting: "AddNonVoter demo-3 failed: 503", stepFailed: "AddNonVoter demo-3 failed: 503"}, kvv1.PhaseDegraded, "True", kvv1.ReasonAvailable, "True", "True"},
		{"a voter down during a step", true, false, observation{pods: 3, readyPods: 2, voters: 3, leader: "demo-0", members: append(healthy[:2:2], kvv1.MemberStatus{Name: "demo-2", Role: clusterapi.RoleVoter}), reachable: true, step: "AddNonVoter demo-3"}, kvv1.PhaseDegraded, "False", kvv1.ReasonMembersUnhealthy, "True", "True"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kvs := testutil.StoredKVS("demo")
			kvs.Generation = 4
			if tc.bootstrapped {
				// Every member of the store was healthy before.
				kvs.Status.Members = healthy
			}
			kvs.Status.Bootstrapped = tc.bootstrapped
			kvs.Spec.Paused = tc.paused
			setStatus(kvs, tc.obs)
			st := kvs.Status
			r := meta.FindStatusCondition(st.Conditions, kvv1.ConditionReady)
			p := meta.FindStatusCondition(st.Conditions, kvv1.ConditionProgressing)
			d := meta.FindStatusCondition(st.Conditions, kvv1.ConditionDegraded)
			if st.Phase != tc.phase || r.Status != tc.ready || r.Reason != tc.reason || p.Status != tc.progressing || d.Status != tc.degraded {
				t.Fatalf("phase %s, Ready %s/%s, Progressing %s, Degraded %s", st.Phase, r.Status, r.Reason, p.Status, d.Status)
			}
			if (tc.obs.err == nil) != (st.ObservedGeneration == 4) {
				t.Fatalf("observedGeneration %d with err %v", st.ObservedGeneration, tc.obs.err)
			}
		})
	}
}

// A quorum lost for good is Degraded with reason QuorumLost and the
// message that names the survivor.
func TestSetStatusQuorumLost(t *testing.T) {
	kvs := testutil.StoredKVS("demo")
	kvs.Status.Bootstrapped = true
	msg := "quorum lost: 2 of 3 voters lost their volumes (demo-1, demo-2), and a majority is 2; the most up-to-date survivor is demo-0"
	setStatus(kvs, observation{pods: 3, voters: 3, reachable: true, quorumLost: msg, blocked: "member 1 lost its volume"})
	d := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded)
	if kvs.Status.Phase != kvv1.PhaseDegraded || d.Reason != kvv1.ReasonQuorumLost || d.Message != msg {
		t.Fatalf("phase %s, Degraded %s %s %q", kvs.Status.Phase, d.Status, d.Reason, d.Message)
	}
}

// A change the plan will not make is Degraded with the plan's reason,
// even while the cluster serves.
func TestSetStatusUnsafeMembershipChange(t *testing.T) {
	kvs := testutil.StoredKVS("demo")
	kvs.Status.Bootstrapped = true
	why := "the scale-down to 3 pods waits for a leader"
	setStatus(kvs, observation{pods: 5, readyPods: 5, voters: 5, reachable: true, blocked: why})
	d := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded)
	if kvs.Status.Phase != kvv1.PhaseDegraded || d.Status != metav1.ConditionTrue || d.Reason != kvv1.ReasonUnsafeMembershipChange || d.Message != why {
		t.Fatalf("phase %s, Degraded %+v", kvs.Status.Phase, d)
	}
}

// A member whose volume is full makes StorageFull true, naming it and its
// numbers; once none is, it is false again.
func TestSetStatusStorageFull(t *testing.T) {
	kvs := testutil.StoredKVS("demo")
	kvs.Status.Bootstrapped = true
	setStatus(kvs, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", reachable: true, storageFull: []string{"demo-1 (10 of 100 bytes free, 50 reserved)"}})
	c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionStorageFull)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != kvv1.ReasonVolumesFull || !strings.Contains(c.Message, "demo-1 (10 of 100 bytes free") || !strings.Contains(c.Message, "507") {
		t.Fatalf("StorageFull %+v", c)
	}
	setStatus(kvs, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", reachable: true})
	if c := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionStorageFull); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("StorageFull after: %+v", c)
	}
}

func TestSetStatusResizingVolumes(t *testing.T) {
	k := testutil.StoredKVS("demo")
	k.Status.Bootstrapped = true
	healthy := []kvv1.MemberStatus{{Name: "demo-0", Role: "voter", Healthy: true}, {Name: "demo-1", Role: "voter", Healthy: true}, {Name: "demo-2", Role: "voter", Healthy: true}}
	setStatus(k, observation{pods: 3, readyPods: 3, voters: 3, leader: "demo-0", members: healthy, reachable: true, resizing: "resizing volumes: data-demo-0 (1Gi of 2Gi)"})
	p := meta.FindStatusCondition(k.Status.Conditions, kvv1.ConditionProgressing)
	if p == nil || p.Reason != kvv1.ReasonResizingVolumes || !strings.Contains(p.Message, "data-demo-0") || !meta.IsStatusConditionTrue(k.Status.Conditions, kvv1.ConditionReady) {
		t.Fatalf("conditions %+v", k.Status.Conditions)
	}
}

// A member is joining from when it appears (or changes its role) until it
// is first healthy; a member that was healthy and is not is down.
func TestSetStatusJoining(t *testing.T) {
	voter := func(name string, healthy bool) kvv1.MemberStatus {
		return kvv1.MemberStatus{Name: name, Role: clusterapi.RoleVoter, Healthy: healthy}
	}
	nonVoter := func(name string, healthy bool) kvv1.MemberStatus {
		return kvv1.MemberStatus{Name: name, Role: clusterapi.RoleNonVoter, Healthy: healthy}
	}
	kvs := testutil.StoredKVS("demo", testutil.WithReplicas(2))
	kvs.Status.Bootstrapped = true
	for i, step := range []struct {
		obs      observation
		joining  string // the members marked joining
		degraded metav1.ConditionStatus
		phase    string
	}{
		{observation{pods: 2, readyPods: 1, voters: 1, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), nonVoter("demo-1", false)}}, "demo-1", "False", kvv1.PhaseScaling},
		{observation{pods: 2, readyPods: 1, voters: 1, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), nonVoter("demo-1", true)}}, "", "False", kvv1.PhaseScaling},
		// Promoted, and not healthy as a voter yet.
		{observation{pods: 2, readyPods: 1, voters: 2, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), voter("demo-1", false)}}, "demo-1", "False", kvv1.PhaseScaling},
		{observation{pods: 2, readyPods: 1, voters: 2, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), voter("demo-1", false)}}, "demo-1", "False", kvv1.PhaseScaling},
		{observation{pods: 2, readyPods: 2, voters: 2, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), voter("demo-1", true)}}, "", "False", kvv1.PhaseRunning},
		// Healthy once, down now: a fault.
		{observation{pods: 2, readyPods: 1, voters: 2, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), voter("demo-1", false)}}, "", "True", kvv1.PhaseDegraded},
		// Nobody answers, then they do: still the same members, still down.
		{observation{pods: 2}, "", "True", kvv1.PhaseDegraded},
		{observation{pods: 2, readyPods: 1, voters: 2, leader: "demo-0", reachable: true, members: []kvv1.MemberStatus{voter("demo-0", true), voter("demo-1", false)}}, "", "True", kvv1.PhaseDegraded},
	} {
		setStatus(kvs, step.obs)
		var joining []string
		for _, m := range kvs.Status.Members {
			if m.Joining {
				joining = append(joining, m.Name)
			}
		}
		d := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionDegraded)
		if got := strings.Join(joining, ","); got != step.joining || d.Status != step.degraded || kvs.Status.Phase != step.phase {
			t.Fatalf("step %d: joining %q, Degraded %s (%s), phase %s; want %q, %s, %s", i, got, d.Status, d.Message, kvs.Status.Phase, step.joining, step.degraded, step.phase)
		}
	}
}
