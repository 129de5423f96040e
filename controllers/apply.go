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
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return applyUnstructured(ctx, c, &unstructured.Unstructured{Object: m}, FieldOwner)
}

// applyUnstructured applies exactly the fields in u. A typed object cannot
// say "only these fields": its zero values (a null selector, an empty
// serviceName) would be applied too.
func applyUnstructured(ctx context.Context, c client.Client, u *unstructured.Unstructured, owner string) error {
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(owner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}
