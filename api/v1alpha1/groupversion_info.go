// Package v1alpha1 is the KeyValueStore API: what a user asks for (spec)
// and what the operator observed (status), with the names, labels,
// condition types and reasons every controller shares.
//
// +kubebuilder:object:generate=true
// +groupName=kv.kvstore.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of KeyValueStore.
	GroupVersion = schema.GroupVersion{Group: "kv.kvstore.dev", Version: "v1alpha1"}
	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
