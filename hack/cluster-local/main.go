// Command cluster-local starts a kvnode cluster of real processes on
// loopback, with HTTPS, mutual-TLS peer traffic and an admin certificate,
// and prints how to reach it. Ctrl-C stops it. `make cluster-local` runs it.
//
//	go run ./hack/cluster-local -n 3 -dir /tmp/kv-local
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kvstore-operator/kvstore-operator/test/harness"
)

func main() {
	n := flag.Int("n", 3, "number of voters")
	dir := flag.String("dir", filepath.Join(os.TempDir(), "kvstore-local"), "directory for data, certificates and the binary")
	bin := flag.String("kvnode", "", "kvnode binary (default: build one into -dir)")
	verbose := flag.Bool("v", false, "print the members' logs")
	flag.Parse()
	// log.Fatal skips deferred calls: run returns, so that the members stop.
	if err := run(*n, *dir, *bin, *verbose); err != nil {
		log.Fatal(err)
	}
}

func run(n int, dir, bin string, verbose bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if bin == "" {
		bin = filepath.Join(dir, "kvnode")
		fmt.Println("building kvnode...")
		build := exec.Command("go", "build", "-o", bin, "./cmd/kvnode")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return err
		}
	}
	opts := harness.Options{Binary: bin, Dir: dir}
	if verbose {
		opts.Output = os.Stdout
	}
	c, err := harness.New(opts)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	start := time.Now()
	fmt.Printf("starting %d members (bootstrap the first, add the others as non-voters, promote them)...\n", n)
	if err := c.StartN(ctx, n); err != nil {
		cancel()
		c.DumpLogs(os.Stderr)
		return err
	}
	cancel()
	info, _ := c.Info(context.Background())
	fmt.Printf("cluster %s ready in %v, leader %s\n\n", info.ClusterID, time.Since(start).Round(time.Millisecond), info.Leader)
	caFile := filepath.Join(dir, "ca.crt")
	adminCert, adminKey, _ := c.CA.Issue(harness.AdminLeaf(), time.Now())
	for path, b := range map[string][]byte{caFile: c.CA.CertPEM, filepath.Join(dir, "admin.crt"): adminCert, filepath.Join(dir, "admin.key"): adminKey} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return err
		}
	}
	for _, m := range c.Members() {
		fmt.Printf("  %s  API %s  peer %s  data %s\n", m.ID, m.API, m.PeerAddr, m.DataDir)
	}
	m0 := c.Member(0).API
	fmt.Printf(`
Try it (any member answers; followers forward to the leader):
  curl --cacert %[1]s -X PUT -d 'Hello, key-value store!' %[2]s/v1/key-a
  curl --cacert %[1]s %[3]s/v1/key-a
  curl --cacert %[1]s --cert %[4]s --key %[5]s %[2]s/v1/cluster

Ctrl-C stops the cluster.
`, caFile, m0, c.Members()[len(c.Members())-1].API, filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("stopping...")
	return nil
}
