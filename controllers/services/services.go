// Package services builds the two Services of a KeyValueStore: the
// headless one that gives every member a stable DNS name (published before
// the pods are ready, since members must find each other to become ready),
// and the client one that load-balances over ready members. Both publish
// the API port and, while spec.frontends.grpc is on, the gRPC port (on the
// headless one for gRPC clients that balance over the members by DNS).
package services

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// BuildHeadless returns the peers' Service.
func BuildHeadless(kvs *kvv1.KeyValueStore) *corev1.Service {
	s := base(kvs, kvv1.HeadlessServiceName(kvs))
	s.Spec.ClusterIP = corev1.ClusterIPNone
	s.Spec.PublishNotReadyAddresses = true
	s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "peer", Port: kvv1.PeerPort, TargetPort: intstr.FromString("peer"), Protocol: corev1.ProtocolTCP})
	return s
}

// BuildClient returns the clients' Service.
func BuildClient(kvs *kvv1.KeyValueStore) *corev1.Service {
	s := base(kvs, kvv1.ClientServiceName(kvs))
	s.Spec.Type = corev1.ServiceTypeClusterIP
	return s
}

func base(kvs *kvv1.KeyValueStore, name string) *corev1.Service {
	ports := []corev1.ServicePort{{Name: "api", Port: kvv1.APIPort, TargetPort: intstr.FromString("api"), Protocol: corev1.ProtocolTCP}}
	if kvs.GRPCEnabled() {
		// Applied without it when off, so the operator's apply removes it.
		ports = append(ports, corev1.ServicePort{Name: "grpc", Port: kvv1.GRPCPort, TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP})
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: kvv1.ChildMeta(kvs, name),
		Spec: corev1.ServiceSpec{
			Selector: kvv1.SelectorLabels(kvs),
			Ports:    ports,
		},
	}
}
