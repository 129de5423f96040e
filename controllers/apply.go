package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the single field manager of everything the operator applies.
const FieldOwner = "kvstore-operator"

// apply server-side-applies a typed object built by a Build function. The
// object is converted to unstructured so that fields the builder did not
// set (status, creationTimestamp) are not claimed.
func apply(ctx context.Context, c client.Client, obj client.Object) error {
	return applyAs(ctx, c, obj, FieldOwner)
}

// applyAs applies obj with another field owner.
func applyAs(ctx context.Context, c client.Client, obj client.Object, owner string) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	u := &unstructured.Unstructured{Object: m}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(owner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}
