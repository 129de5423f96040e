// Package grpcapi owns the gRPC front end of a kvnode: the book's KeyValue
// service (chapter 8; the protocol is pb/keyvalue.proto) and the standard
// health service, served with the same TLS, the same client identities and
// rights, the same load shedding and request deadline, and the same store
// as the REST API (package rest). statusFor is the one place where store
// errors become gRPC status codes.
package grpcapi

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kvstore-operator/kvstore-operator/kvnode/access"
	"github.com/kvstore-operator/kvstore-operator/kvnode/core"
	"github.com/kvstore-operator/kvstore-operator/kvnode/grpcapi/pb"
	"github.com/kvstore-operator/kvstore-operator/kvnode/keyapi"
	"github.com/kvstore-operator/kvstore-operator/kvnode/shed"
	"github.com/kvstore-operator/kvstore-operator/kvnode/throttle"
)

// Observer records each call, as the REST API's metrics do for requests.
type Observer interface {
	ObserveRPC(method string, code codes.Code, d time.Duration)
}

// Config is what the server serves and how.
type Config struct {
	KV core.KV
	// Guard identifies clients (--client-auth=mtls); nil admits everyone.
	Guard access.Guard
	// Gate is the node's bound on requests in flight, shared with REST.
	Gate *shed.Gate
	// Timeout bounds every call, as --request-timeout does for REST.
	Timeout time.Duration
	// Limiter keeps each client to its rate, the same buckets as REST's
	// (a client's calls over both front ends draw on one); nil: no limit.
	Limiter *throttle.Limiter
	// Throttled is told of each call refused for its client's rate.
	Throttled func(throttle.Identity)
	// TLS is the server's TLS configuration; nil serves plaintext.
	TLS      *tls.Config
	Logger   *slog.Logger
	Observer Observer
	// Leader returns the leader's gRPC address ("" when not known), sent
	// on the answers to writes as keyapi.MetadataLeader; nil sends none.
	Leader func() string
}

// retryAfter is what a call told to come back is asked to wait, as REST's
// Retry-After: 1.
const retryAfter = time.Second

// NewServer returns a gRPC server with the KeyValue and health services
// registered, and the health service, which the caller sets serving or
// not (it starts NOT_SERVING).
func NewServer(cfg Config) (*grpc.Server, *health.Server) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	limits := cfg.KV.Limits()
	s := &server{cfg: cfg}
	opts := []grpc.ServerOption{
		grpc.InTapHandle(s.tap),
		grpc.ChainUnaryInterceptor(s.observe, s.shed),
		// A message holds at most one value and one key: bound what a
		// client may make the node read, as REST bounds a body.
		grpc.MaxRecvMsgSize(limits.MaxValueBytes + limits.MaxKeyBytes + 1024),
		grpc.MaxConcurrentStreams(256),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 2 * time.Minute, Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	g := grpc.NewServer(opts...)
	pb.RegisterKeyValueServer(g, s)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetServingStatus(pb.KeyValue_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, checkOnly{h: h})
	return g, h
}

// checkOnly serves the health service's Check alone: a Watch stream never
// ends by itself, so it would hold a graceful stop for the whole shutdown
// timeout, and it would be a stream anyone may hold open. Probes (the
// kubelet's gRPC probe, grpc-health-probe) use Check.
type checkOnly struct {
	healthpb.UnimplementedHealthServer
	h *health.Server
}

func (c checkOnly) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return c.h.Check(ctx, r)
}

// SetServing sets the health of the server and of the KeyValue service.
func SetServing(h *health.Server, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.SetServingStatus("", st)
	h.SetServingStatus(pb.KeyValue_ServiceDesc.ServiceName, st)
}

type server struct {
	pb.UnimplementedKeyValueServer
	cfg Config
}

// observe counts and times every call, and logs failures of the node as
// REST does (never the key: it may be personal data).
func (s *server) observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	code := status.Code(err)
	if s.cfg.Observer != nil {
		s.cfg.Observer.ObserveRPC(info.FullMethod, code, time.Since(start))
	}
	return resp, err
}

// tap draws on the node's gate when a call's headers arrive, before its
// message is read: grpc reads a unary call's whole message (up to
// MaxRecvMsgSize) before any interceptor runs, so a gate taken there
// would not bound the memory that callers hold. The slot is freed when
// the call's stream ends, whichever way it ends.
func (s *server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName == healthpb.Health_Check_FullMethodName {
		return ctx, nil // probes stay outside of shedding, as on REST
	}
	if !s.cfg.Gate.TryEnter() {
		return nil, retryLater(codes.Unavailable, shed.Message, retryAfter)
	}
	context.AfterFunc(ctx, s.cfg.Gate.Leave)
	return ctx, nil
}

// shed throttles the call and gives it the node's deadline when the
// client set none or a later one (the gate was taken in tap).
func (s *server) shed(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod == healthpb.Health_Check_FullMethodName {
		return handler(ctx, req)
	}
	// Over its rate after shedding, as on REST: 429 there, here
	// ResourceExhausted with the time until the bucket holds a token.
	if s.cfg.Limiter != nil {
		var cs *tls.ConnectionState
		addr := ""
		if p, ok := peer.FromContext(ctx); ok {
			addr = p.Addr.String()
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				cs = &info.State
			}
		}
		id, _, _ := throttle.Identify(s.cfg.Guard, cs, addr)
		if d := s.cfg.Limiter.Admit(id); !d.OK {
			if s.cfg.Throttled != nil {
				s.cfg.Throttled(id)
			}
			return nil, retryLater(codes.ResourceExhausted, d.Reason(), time.Duration(throttle.RetryAfterSeconds(d.RetryAfter))*time.Second)
		}
	}
	if s.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
	}
	return handler(ctx, req)
}

// client identifies the caller; a nil guard admits everyone.
func (s *server) client(ctx context.Context) (*access.Client, error) {
	if s.cfg.Guard == nil {
		return nil, nil
	}
	var cs *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cs = &info.State
		}
	}
	c, err := s.cfg.Guard.Identify(cs)
	if err != nil {
		return nil, refused(err)
	}
	return &c, nil
}

func (s *server) allowed(ctx context.Context, op access.Op, key string) error {
	c, err := s.client(ctx)
	if err != nil || c == nil {
		return err
	}
	if err := c.Allows(op, key); err != nil {
		return refused(err)
	}
	return nil
}

func (s *server) Get(ctx context.Context, r *pb.GetRequest) (*pb.GetResponse, error) {
	if err := s.allowed(ctx, access.Read, r.GetKey()); err != nil {
		return nil, err
	}
	c, err := consistency(r.GetConsistency())
	if err != nil {
		return nil, err
	}
	v, err := s.cfg.KV.Get(ctx, r.GetKey(), c)
	if err != nil {
		return nil, s.fail(ctx, "Get", err)
	}
	return &pb.GetResponse{Value: v}, nil
}

func (s *server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := s.allowed(ctx, access.Write, r.GetKey()); err != nil {
		return nil, err
	}
	v := r.GetValue()
	if v == nil {
		v = []byte{}
	}
	if err := s.cfg.KV.Put(ctx, r.GetKey(), v); err != nil {
		return nil, s.fail(ctx, "Put", err)
	}
	s.hintLeader(ctx)
	return &pb.PutResponse{}, nil
}

func (s *server) Delete(ctx context.Context, r *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	if err := s.allowed(ctx, access.Write, r.GetKey()); err != nil {
		return nil, err
	}
	if err := s.cfg.KV.Delete(ctx, r.GetKey()); err != nil {
		return nil, s.fail(ctx, "Delete", err)
	}
	s.hintLeader(ctx)
	return &pb.DeleteResponse{}, nil
}

// hintLeader names the leader in the response header of a successful
// write, for clients that send their writes straight to it.
func (s *server) hintLeader(ctx context.Context) {
	if s.cfg.Leader == nil {
		return
	}
	if a := s.cfg.Leader(); a != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(keyapi.MetadataLeader, a))
	}
}

func (s *server) List(ctx context.Context, r *pb.ListRequest) (*pb.ListResponse, error) {
	prefix := r.GetPrefix()
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	if c != nil {
		if prefix, err = c.ListPrefix(prefix); err != nil {
			return nil, refused(err)
		}
	}
	limit := int(r.GetLimit())
	switch {
	case limit == 0:
		limit = keyapi.DefaultListLimit
	case limit < 0 || limit > keyapi.MaxListLimit:
		return nil, status.Errorf(codes.InvalidArgument, "limit must be from 1 to %d (0: %d)", keyapi.MaxListLimit, keyapi.DefaultListLimit)
	}
	cons, err := consistency(r.GetConsistency())
	if err != nil {
		return nil, err
	}
	keys, next, err := s.cfg.KV.List(ctx, prefix, r.GetAfter(), limit, cons)
	if err != nil {
		return nil, s.fail(ctx, "List", err)
	}
	return &pb.ListResponse{Keys: keys, Next: next}, nil
}

func consistency(c pb.Consistency) (core.Consistency, error) {
	switch c {
	case pb.Consistency_CONSISTENCY_UNSPECIFIED, pb.Consistency_CONSISTENCY_LINEARIZABLE:
		return core.Linearizable, nil
	case pb.Consistency_CONSISTENCY_STRICT:
		return core.Strict, nil
	case pb.Consistency_CONSISTENCY_STALE:
		return core.Stale, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency %d is not one of LINEARIZABLE, STRICT or STALE", c)
}

// refused is the status of a request access refused. Not logged: anyone
// who reaches the port could fill the log.
func refused(err error) error {
	if errors.Is(err, access.ErrUnauthenticated) {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.PermissionDenied, err.Error())
}

// fail is the status of a failed call, logged as REST logs a 5xx.
func (s *server) fail(ctx context.Context, method string, err error) error {
	code, retry := statusFor(err)
	if code == codes.Canceled && ctx.Err() != nil {
		return status.Error(code, err.Error()) // the client is gone
	}
	switch code {
	// Not DeadlineExceeded: a client's own short deadline would fill the
	// log (the metrics count them).
	case codes.Unavailable, codes.Internal, codes.Unknown:
		s.cfg.Logger.Warn("request failed", "method", method, "code", code.String(), "error", err.Error())
	}
	if retry {
		return retryLater(code, err.Error(), retryAfter)
	}
	return status.Error(code, err.Error())
}

// statusFor maps an error from the store to a gRPC code, and says whether
// the client should retry after a while (REST's 503 with Retry-After).
func statusFor(err error) (codes.Code, bool) {
	switch {
	case errors.Is(err, core.ErrNoSuchKey):
		return codes.NotFound, false
	case errors.Is(err, core.ErrEmptyKey), errors.Is(err, core.ErrKeyTooLarge), errors.Is(err, core.ErrValueTooLarge):
		return codes.InvalidArgument, false
	case errors.Is(err, core.ErrNoSpace):
		// Nothing was written; retrying at once will not help until space
		// is freed (REST's 507).
		return codes.ResourceExhausted, false
	case errors.Is(err, core.ErrIndeterminate), errors.Is(err, context.DeadlineExceeded):
		// A write that may have been applied (gRPC's meaning of
		// DeadlineExceeded: "even if the operation has completed"), or a
		// deadline passed waiting for a leader or a quorum. Sending a
		// write again is not safe when others write the key
		// (keyapi.HeaderOutcome): no RetryInfo.
		return codes.DeadlineExceeded, false
	case errors.Is(err, core.ErrNotLeader), errors.Is(err, core.ErrUnavailable):
		// Certainly not applied: come back.
		return codes.Unavailable, true
	case errors.Is(err, context.Canceled):
		return codes.Canceled, false
	}
	return codes.Internal, false
}

// retryLater is a status with a RetryInfo detail: gRPC's Retry-After.
func retryLater(code codes.Code, msg string, after time.Duration) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}); err == nil {
		return d.Err()
	}
	return st.Err()
}
