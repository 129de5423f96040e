package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore-operator/kvstore-operator/kvnode/client"
)

// With --rest-api=false a REST client does not read an existing key as
// missing: the key routes answer 501, not the 404 of a missing key, so
// neither package client (ErrNotFound) nor kvctl (exit status 3) says
// "no such key".
func TestRESTOffIsNotAMissingKey(t *testing.T) {
	p := launch(t, nil, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bootstrap", "always", "--node-id", "n0", "--rest-api=false")
	p.waitReady(&http.Client{Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := client.New(client.Config{Protocol: client.GRPC, Endpoints: []string{"http://" + p.grpcAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	r, err := client.New(client.Config{Endpoints: []string{p.url("")}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Get(ctx, "k")
	if errors.Is(err, client.ErrNotFound) {
		t.Errorf("an existing key reads as missing over REST with REST off: %v", err)
	}
	cmd := exec.Command(kvctlBin, "get", "--endpoint", p.url(""), "k")
	var out bytes.Buffer
	cmd.Stderr = &out
	_ = cmd.Run()
	if cmd.ProcessState.ExitCode() == 3 {
		t.Errorf("kvctl get of an existing key exits 3 (no such key): %s", strings.TrimSpace(out.String()))
	}
}
