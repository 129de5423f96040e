package main

import (
	"io"
	"net"
	"testing"
)

// A node told to serve its API on loopback only (`make run`: --listen
// localhost:8080) serves gRPC there too, not on every interface: unset,
// --grpc-listen takes the host of --listen.
func TestGRPCDefaultFollowsTheListenHost(t *testing.T) {
	c, err := parseConfig([]string{"--listen", "localhost:8080", "--node-id", "n0"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(c.GRPCListen)
	if host == "" {
		t.Errorf("--listen %s but gRPC on %q: the key API on all interfaces", c.Listen, c.GRPCListen)
	}
}

// An explicit --grpc-listen, or KV_GRPC_LISTEN, wins; empty turns gRPC off.
func TestGRPCListenGiven(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--grpc-listen", ":6000"}, nil, ":6000"},
		{nil, map[string]string{"KV_GRPC_LISTEN": ""}, ""},
		{nil, map[string]string{"KV_GRPC_LISTEN": "127.0.0.1:7000"}, "127.0.0.1:7000"},
		{nil, nil, "127.0.0.1:50051"},
	} {
		args := append([]string{"--listen", "127.0.0.1:8080", "--node-id", "n0"}, c.args...)
		cfg, err := parseConfig(args, func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.GRPCListen != c.want {
			t.Errorf("%v %v: --grpc-listen %q, want %q", c.args, c.env, cfg.GRPCListen, c.want)
		}
	}
}
