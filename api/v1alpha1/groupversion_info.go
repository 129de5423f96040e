// Package v1alpha1 is the KeyValueStore API: what a user asks for (spec)
// and what the operator observed (status), with the names, labels,
// condition types and reasons every controller shares.
//
// +kubebuilder:object:generate=true
// +groupName=kv.kvstore.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of KeyValueStore.
	GroupVersion = schema.GroupVersion{Group: "kv.kvstore.dev", Version: "v1alpha1"}
	// SchemeBuilder registers the types with a scheme. It is apimachinery's
	// own, so that importing the API needs no controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &KeyValueStore{}, &KeyValueStoreList{}, &KeyValueStoreBackup{}, &KeyValueStoreBackupList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
