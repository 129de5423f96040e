package grpcapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
)

// big holds a value written while the node's --max-value-bytes was larger
// (spec.limits lowered later): the store keeps it, REST serves it.
type big struct{ failing }

func (big) Get(context.Context, string, core.Consistency) ([]byte, error) {
	return make([]byte, 2<<20), nil
}

// What the node sends is not bound by today's limits: a value stored under
// a higher limit stays readable over gRPC, as over REST.
func TestAStoredValueOverTodaysLimitIsReadable(t *testing.T) {
	kv := serve(t, grpcapi.Config{KV: big{}})
	_, err := kv.Get(context.Background(), &pb.GetRequest{Key: "k"})
	if status.Code(err) != codes.OK {
		t.Errorf("reading a stored 2 MiB value (limit now 1 MiB): %v", err)
	}
}
