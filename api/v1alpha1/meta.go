package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// OwnerRef makes the KeyValueStore the controller of a child, so that
// deleting the store deletes its children (and a child's events requeue
// the store).
func OwnerRef(kvs *KeyValueStore) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: GroupVersion.String(), Kind: "KeyValueStore", Name: kvs.Name, UID: kvs.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
}

// ChildMeta is the metadata of every object the operator creates for a
// store: its name, the store's namespace, the common labels and the owner
// reference.
func ChildMeta(kvs *KeyValueStore, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: kvs.Namespace, Labels: Labels(kvs),
		OwnerReferences: []metav1.OwnerReference{OwnerRef(kvs)},
	}
}
