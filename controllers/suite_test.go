package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
)

// The controller tests run against a real kube-apiserver and etcd
// (envtest), built by `make envtest-assets`; `make test` points
// KUBEBUILDER_ASSETS at them.
var (
	k8s client.Client
	// restConfig reaches the test API server, for clients other than k8s.
	restConfig *rest.Config
	clock      = &testClock{t: time.Now()}
	// scheduleClock drives spec.backup.schedule alone: the other clock
	// jumps months ahead for certificate renewal.
	scheduleClock = &testClock{t: time.Now()}
	fakeKV        = newFakeCluster()
	recorder      = &eventLog{}
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the controller tests with `make test`, which builds etcd and kube-apiserver (hack/k8s-binaries.sh) and sets it")
		os.Exit(1)
	}
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		// The default 10 s is too short for an API server starting on a
		// busy 2-core machine.
		CRDInstallOptions: envtest.CRDInstallOptions{MaxTime: time.Minute},
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	restConfig = cfg
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kvv1.AddToScheme(scheme))
	// The operator's cache, so that every test reads as the operator does:
	// a Secret or pod the operator did not label is not in it.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Cache: CacheOptions(nil), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		panic(err)
	}
	r := &KeyValueStoreReconciler{
		Client:   mgr.GetClient(),
		Recorder: recorder,
		Now:      clock.Now,
		NewMembershipClient: func(kvs *kvv1.KeyValueStore, ca, cert, key []byte) (MembershipClient, error) {
			if len(ca) == 0 || len(cert) == 0 || len(key) == 0 {
				return nil, fmt.Errorf("admin certificate missing")
			}
			return fakeKV.client(kvs), nil
		},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		panic(err)
	}
	if err := (&KeyValueStoreBackupReconciler{Client: mgr.GetClient(), Recorder: recorder, Now: clock.Now}).SetupWithManager(mgr); err != nil {
		panic(err)
	}
	if err := (&BackupScheduleReconciler{Client: mgr.GetClient(), Recorder: recorder, Now: scheduleClock.Now}).SetupWithManager(mgr); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := mgr.Start(ctx); err != nil {
			panic(err)
		}
	}()
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	cancel()
	env.Stop()
	os.Exit(code)
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (e *eventLog) Eventf(regarding, _ runtime.Object, _, reason, _, note string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	obj, _ := regarding.(client.Object)
	e.events = append(e.events, obj.GetName()+" "+reason+" "+fmt.Sprintf(note, args...))
}

func (e *eventLog) has(prefix string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.events {
		if len(ev) >= len(prefix) && ev[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
