// Package hpa builds the HorizontalPodAutoscaler that adds and removes
// non-voting read replicas: it scales the StatefulSet between
// max(minReplicas, replicas) and maxReplicas, so the voters are never
// touched. A store whose log is in PostgreSQL has no voters: the HPA
// scales its Deployment within the same bounds, every pod alike.
package hpa

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// Build returns the desired HPA, or nil when autoscaling is off. floor
// lifts its minimum further: the pods the HPA may not remove because they
// still hold voters (after a cut of spec.replicas, until the members beyond
// it are demoted), which spec.replicas alone does not say.
func Build(kvs *kvv1.KeyValueStore, floor int32) *autoscalingv2.HorizontalPodAutoscaler {
	if !kvs.AutoscalingEnabled() {
		return nil
	}
	a := kvs.Spec.Autoscaling
	lo := kvs.Voters()
	if a.MinReplicas != nil && *a.MinReplicas > lo {
		lo = *a.MinReplicas
	}
	lo = max(lo, floor)
	ref := autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: kvv1.StatefulSetName(kvs)}
	if kvs.PostgresLog() {
		ref = autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: kvv1.DeploymentName(kvs)}
	}
	target := a.TargetCPUUtilizationPercentage
	if target == 0 {
		target = 70
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: kvv1.ChildMeta(kvs, kvv1.HPAName(kvs)),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: ref,
			MinReplicas:    ptr.To(lo),
			MaxReplicas:    max(a.MaxReplicas, lo),
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   "cpu",
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(target)},
				},
			}},
		},
	}
}
