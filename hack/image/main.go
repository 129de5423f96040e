// Command image packs static binaries into a one-layer OCI image and
// writes it as a docker-archive tarball, without a Docker engine or a
// registry: the local cluster imports it with `ctr images import`, and
// `docker load` accepts it too. The image matches the Dockerfile: the
// binary on an empty base, a non-root user, a writable data directory.
//
//	hack/build-helpers.sh image-packer && bin/image-packer -binary bin/kvnode,bin/kvctl -tag kvstore.dev/kvnode:dev -out dist/kvnode.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const uid = 65532 // the "nonroot" user of distroless images

func main() {
	binary := flag.String("binary", "", "comma-separated static binaries to put at /<name of the file>; the first is the entrypoint")
	tag := flag.String("tag", "", "image reference, e.g. kvstore.dev/kvnode:dev")
	out := flag.String("out", "", "tarball to write")
	dirs := flag.String("dirs", "/var/lib/kvnode,/tmp", "comma-separated directories the user may write")
	env := flag.String("env", "KV_DATA_DIR=/var/lib/kvnode,KV_LISTEN=:8080", "comma-separated environment")
	ports := flag.String("ports", "8080/tcp,8081/tcp,50051/tcp", "comma-separated exposed ports")
	flag.Parse()
	if *binary == "" || *tag == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(split(*binary), *tag, *out, split(*dirs), split(*env), split(*ports)); err != nil {
		log.Fatal(err)
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func build(binaries []string, tag, out string, dirs, env, ports []string) error {
	entry := "/" + path.Base(binaries[0])
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time keeps the image digest the same for the same binary.
	mtime := time.Unix(0, 0)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755 | int64(stickyIfTmp(d)), Uid: uid, Gid: uid, ModTime: mtime}); err != nil {
			return err
		}
	}
	for _, b := range binaries {
		bin, err := os.ReadFile(b)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Base(b), Mode: 0o755, Size: int64(len(bin)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := tw.Write(bin); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.DockerManifestSchema2), layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg := cf.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Created = v1.Time{Time: mtime}
	cfg.Config.Entrypoint = []string{entry}
	cfg.Config.User = fmt.Sprintf("%d:%d", uid, uid)
	cfg.Config.Env = env
	cfg.Config.WorkingDir = "/"
	cfg.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range ports {
		cfg.Config.ExposedPorts[p] = struct{}{}
	}
	cfg.Config.Volumes = map[string]struct{}{}
	for _, d := range dirs {
		if d != "/tmp" {
			cfg.Config.Volumes[d] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(path.Dir(out), 0o755); err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Printf("wrote %s (%s, %s)\n", out, ref, d)
	return nil
}

func stickyIfTmp(d string) int {
	if d == "/tmp" {
		return 0o1777 &^ 0o755
	}
	return 0
}
