package controllers

import (
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Backoff of a request whose reconcile failed: doubled with each failure
// in a row from FailureBackoffBase, up to FailureBackoffMax, and reset by
// a reconcile that succeeds.
const (
	// FailureBackoffBase is higher than controller-runtime's 5 ms, which
	// is meant for a conflict that the next read resolves: a store's
	// reconcile that fails usually fails for a reason that lasts (a
	// rejected object, an API server away), and each attempt costs a
	// dozen API calls and an error line.
	FailureBackoffBase = 500 * time.Millisecond
	FailureBackoffMax  = 5 * time.Minute
)

// controllerOptions are the options of every controller of the operator:
// the failure backoff above, and a logger with two short fields (the
// controller and namespace/name of the object) in place of
// controller-runtime's six (group, kind, the object's name and namespace,
// and these twice more).
func controllerOptions(mgr ctrl.Manager, name, key string) controller.Options {
	base := mgr.GetLogger().WithValues("controller", name)
	return controller.Options{
		RateLimiter: workqueue.NewTypedMaxOfRateLimiter(
			workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](FailureBackoffBase, FailureBackoffMax),
			// Overall, as controller-runtime's default: 10 per second.
			&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
		),
		LogConstructor: func(req *reconcile.Request) logr.Logger {
			if req == nil {
				return base
			}
			return base.WithValues(key, req.String())
		},
	}
}
