// Command cachebench measures what unrelated Secrets cost the operator's
// cache, in one run: the cache as the operator configures it
// (controllers.CacheOptions: only what it labelled) against a cache of
// every Secret, as controller-runtime does by default. It starts a real
// kube-apiserver (envtest, KUBEBUILDER_ASSETS), fills a namespace the
// operator has nothing to do with with -secrets Secrets of -size bytes,
// then starts each cache in a process of its own (so that one's memory
// does not count against the other) and prints the heap and the RSS of
// each once the cache has synced.
//
//	KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh etcd kube-apiserver | tail -1) go run ./hack/cachebench
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers"
)

// sample is what one cache process reports.
type sample struct {
	Config           string
	Secrets          int // in the cache
	HeapBefore, Heap uint64
	RSSBefore, RSS   uint64
	SyncSeconds      float64
}

func main() {
	child := flag.String("child", "", "internal: measure this cache configuration (all, operator) with -child-kubeconfig")
	kubeconfig := flag.String("child-kubeconfig", "", "internal: the API server of the parent")
	n := flag.Int("secrets", 300, "unrelated Secrets to create")
	size := flag.Int("size", 256<<10, "bytes of data in each")
	crds := flag.String("crds", "config/crd/bases", "the CRDs to install")
	flag.Parse()
	log.SetFlags(0)
	if *child != "" {
		if err := measure(*child, *kubeconfig); err != nil {
			log.Fatal(err)
		}
		return
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		log.Fatal("KUBEBUILDER_ASSETS is not set: KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh etcd kube-apiserver | tail -1) go run ./hack/cachebench")
	}
	got, err := compare(*crds, *n, *size)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d unrelated Secrets of %d KiB in another namespace\n\n", *n, *size>>10)
	fmt.Println("| cache | Secrets cached | heap before | heap after sync | RSS before | RSS after sync |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, s := range got {
		fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", describe(s.Config), s.Secrets, mb(s.HeapBefore), mb(s.Heap), mb(s.RSSBefore), mb(s.RSS))
	}
	all, op := got[0], got[1]
	fmt.Printf("\nall / operator after sync: heap %.1f×, RSS %.1f×\n", float64(all.Heap)/float64(op.Heap), float64(all.RSS)/float64(op.RSS))
}

// compare starts the API server, fills it and measures each cache
// configuration in a child process.
func compare(crds string, n, size int) ([]sample, error) {
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{crds}, ErrorIfCRDPathMissing: true,
		CRDInstallOptions: envtest.CRDInstallOptions{MaxTime: time.Minute},
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	defer func() { _ = env.Stop() }()
	dir, err := os.MkdirTemp("", "cachebench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(cfg, path); err != nil {
		return nil, err
	}
	if err := fill(cfg, n, size); err != nil {
		return nil, err
	}
	var got []sample
	for _, config := range []string{"all", "operator"} {
		cmd := exec.Command(os.Args[0], "-child", config, "-child-kubeconfig", path)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config, err)
		}
		var s sample
		if err := json.Unmarshal(out, &s); err != nil {
			return nil, fmt.Errorf("%s: %w: %s", config, err, out)
		}
		got = append(got, s)
	}
	return got, nil
}

func describe(config string) string {
	if config == "all" {
		return "every Secret (no selector, the default)"
	}
	return "controllers.CacheOptions (labelled only)"
}

func mb(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(kvv1.AddToScheme(s))
	return s
}

// fill creates the unrelated Secrets, with random data (nothing along the
// way compresses it away).
func fill(cfg *rest.Config, n, size int) error {
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "unrelated"}}); err != nil {
		return err
	}
	data := make([]byte, size)
	for i := range n {
		_, _ = rand.Read(data)
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: "secret-" + strconv.Itoa(i)},
			Data:       map[string][]byte{"blob": data},
		}
		if err := c.Create(ctx, s); err != nil {
			return fmt.Errorf("secret %d: %w", i, err)
		}
	}
	return nil
}

// measure starts one cache with the informers the operator's controllers
// start (the kinds they own or list), waits for it to sync and prints a
// sample.
func measure(config, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	opts := cache.Options{}
	if config == "operator" {
		opts = controllers.CacheOptions(nil)
	}
	opts.Scheme = scheme()
	s := sample{Config: config}
	s.HeapBefore, s.RSSBefore = memory()
	c, err := cache.New(cfg, opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, obj := range []client.Object{&corev1.Secret{}, &corev1.Pod{}, &batchv1.Job{}, &corev1.PersistentVolumeClaim{}, &kvv1.KeyValueStore{}} {
		if _, err := c.GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	start := time.Now()
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the cache did not sync")
	}
	s.SyncSeconds = time.Since(start).Seconds()
	var list corev1.SecretList
	if err := c.List(ctx, &list); err != nil {
		return err
	}
	s.Secrets = len(list.Items)
	s.Heap, s.RSS = memory()
	return json.NewEncoder(os.Stdout).Encode(s)
}

// memory is the live heap after a collection, and the resident set.
func memory() (heap, rss uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m.HeapAlloc, 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			rss = kb << 10
		}
	}
	return m.HeapAlloc, rss
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}
