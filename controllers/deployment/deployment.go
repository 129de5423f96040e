// Package deployment builds the Deployment of kvnode pods of a store whose
// log is in PostgreSQL (spec.log.type postgres). PostgreSQL orders every
// write, so the pods hold nothing of their own: no volume, no identity
// that must survive a restart, no membership. A Deployment fits that
// better than a StatefulSet: pods are replaced in any order, a rollout is
// the Deployment controller's, and scaling is only a count. The pod
// template is the StatefulSet's (statefulset.PodTemplate), so that both
// kinds of store take the spec's pod settings in the same way.
package deployment

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers/statefulset"
)

// Build returns the desired Deployment. replicas is spec.replicas; nil
// leaves the field to the autoscaler.
func Build(kvs *kvv1.KeyValueStore, replicas *int32) *appsv1.Deployment {
	template := statefulset.PodTemplate(kvs)
	for i := range template.Spec.Containers {
		// A pod that cannot reach PostgreSQL or is refused by it exits
		// with the reason as its last log line: the status shows it
		// (podTrouble). Only here, so that Raft pods do not roll.
		template.Spec.Containers[i].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.DeploymentName(kvs)),
		Spec: appsv1.DeploymentSpec{
			Replicas: replicas,
			Selector: &metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)},
			Strategy: strategy(kvs),
			Template: template,
		},
	}
}

// strategy rolls a new template out without losing capacity: a new pod
// first, then an old one goes. With required anti-affinity the store may
// have exactly a node per pod, where a pod more would never be scheduled
// and the rollout would wait for ever: there, an old pod goes first.
func strategy(kvs *kvv1.KeyValueStore) appsv1.DeploymentStrategy {
	surge, unavailable := intstr.FromInt32(1), intstr.FromInt32(0)
	if kvs.Spec.AntiAffinity == kvv1.AntiAffinityRequired {
		surge, unavailable = intstr.FromInt32(0), intstr.FromInt32(1)
	}
	return appsv1.DeploymentStrategy{
		Type:          appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable},
	}
}
