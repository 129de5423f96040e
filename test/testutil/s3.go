package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnvWeed names the SeaweedFS binary (weed) that StartS3 runs.
const EnvWeed = "KV_WEED"

// S3 is an S3-compatible server for a test: SeaweedFS on loopback, with
// credentials required, and one bucket.
type S3 struct {
	Endpoint  string // http://ip:port
	Bucket    string
	AccessKey string
	SecretKey string
	// Dir holds the server's data and its log (weed.log).
	Dir string
}

// StartS3 starts the server on loopback; see StartS3On.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	return StartS3On(t, "127.0.0.1")
}

// StartS3On starts `weed server` with its S3 gateway, bound to ip on
// free ports, in a temporary directory, and stops it when the test ends.
// Without KV_WEED the test is skipped, or fails when CI is set: CI must
// not pass by skipping.
func StartS3On(t testing.TB, ip string) *S3 {
	t.Helper()
	weed := os.Getenv(EnvWeed)
	if weed == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: the S3 tests need a SeaweedFS binary (weed)", EnvWeed)
		}
		t.Skipf("%s is not set: the S3 tests need a SeaweedFS binary (weed)", EnvWeed)
	}
	dir := t.TempDir()
	s := &S3{Bucket: "kv-backups", AccessKey: "kvtest" + randHex(t, 4), SecretKey: randHex(t, 20), Dir: dir}
	identities, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "kvtest",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	config := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(config, identities, 0o600); err != nil {
		t.Fatal(err)
	}
	p := freePorts(t, ip, 8)
	port := func(i int) string { return strconv.Itoa(p[i]) }
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"server",
		"-dir=" + data, "-ip=" + ip, "-ip.bind=" + ip,
		"-master.port=" + port(0), "-master.port.grpc=" + port(1),
		"-volume.port=" + port(2), "-volume.port.grpc=" + port(3),
		"-filer", "-filer.port=" + port(4), "-filer.port.grpc=" + port(5), "-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + port(6), "-s3.port.grpc=" + port(7), "-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
		"-s3.config=" + config, "-s3.port.iceberg=0", "-s3.port.lance=0",
		// Nothing leaves the machine.
		"-master.telemetry=false",
		"-master.volumeSizeLimitMB=256", "-volume.max=0", "-volume.minFreeSpace=1GiB",
	}
	logFile, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(weed, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			_ = logFile.Close()
			// weed puts its gRPC sockets in /tmp, whatever TMPDIR says.
			for _, f := range []string{"master-grpc-" + port(1), "volume-grpc-" + port(3), "filer-grpc-" + port(5), "s3-grpc-" + port(7)} {
				_ = os.Remove("/tmp/seaweedfs-" + f + ".sock")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("weed log (end):\n%s", b)
		}
	})
	s.Endpoint = "http://" + net.JoinHostPort(ip, port(6))
	c, err := minio.New(net.JoinHostPort(ip, port(6)), &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway answers once master, volume server and filer are up,
	// and takes writes a little later: a bucket and an object written and
	// deleted are the proof.
	deadline := time.Now().Add(90 * time.Second)
	try := func(f func(context.Context) error) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err = f(ctx); err == nil {
			return true
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("SeaweedFS did not serve S3 within 90s: %v\n%s", err, b)
		}
		time.Sleep(500 * time.Millisecond)
		return false
	}
	for !try(func(ctx context.Context) error {
		err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{})
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil // made by a try that timed out
		}
		return err
	}) {
	}
	for !try(func(ctx context.Context) error {
		if _, err := c.PutObject(ctx, s.Bucket, "probe", bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
			return err
		}
		return c.RemoveObject(ctx, s.Bucket, "probe", minio.RemoveObjectOptions{})
	}) {
	}
	return s
}

// Client is a client of the server with its credentials.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint[len("http://"):], &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freePorts returns n distinct free ports on ip (free when returned:
// nothing holds them).
func freePorts(t testing.TB, ip string, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
