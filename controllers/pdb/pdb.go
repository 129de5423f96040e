// Package pdb builds the PodDisruptionBudget that keeps quorum through
// voluntary disruptions (node drains): at most one member down at a time.
// A store whose log is in PostgreSQL has no quorum to keep; the same
// budget keeps all but one of its pods serving through a drain.
package pdb

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// Build returns the desired PodDisruptionBudget. It counts every pod,
// replicas included, which is stricter than "one voter" and never looser.
func Build(kvs *kvv1.KeyValueStore) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.PDBName(kvs)),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &one,
			Selector:       &metav1.LabelSelector{MatchLabels: kvv1.SelectorLabels(kvs)},
		},
	}
}
