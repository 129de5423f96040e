package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildWritesARunnableNonRootImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kvnode")
	if err := os.WriteFile(bin, []byte("#!fake binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	kvctl := filepath.Join(dir, "kvctl")
	if err := os.WriteFile(kvctl, []byte("#!fake client"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := build([]string{bin, kvctl}, "kvstore.dev/kvnode:test", out, []string{"/var/lib/kvnode", "/tmp"}, []string{"KV_DATA_DIR=/var/lib/kvnode"}, []string{"8080/tcp"}); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/kvnode" {
		t.Fatalf("user %q entrypoint %v", cf.Config.User, cf.Config.Entrypoint)
	}
	if _, ok := cf.Config.Volumes["/var/lib/kvnode"]; !ok {
		t.Fatalf("no data volume: %v", cf.Config.Volumes)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	for _, name := range []string{"kvnode", "kvctl"} {
		if h := files[name]; h == nil || h.Mode&0o111 == 0 {
			t.Fatalf("binary %s missing or not executable: %+v", name, h)
		}
	}
	if h := files["var/lib/kvnode/"]; h == nil || h.Uid != 65532 {
		t.Fatalf("data directory not owned by the user: %+v", h)
	}
}
