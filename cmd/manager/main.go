// Command manager runs the kvstore operator: the KeyValueStore controller
// with leader election, metrics and health probes.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers"
	"github.com/kvstore-operator/kvstore-operator/controllers/clientaccess"
)

// settings are what the flags and the environment choose.
type settings struct {
	metricsAddr, probeAddr string
	// metricsSecure serves metrics over HTTPS to clients that the API
	// server authenticates and authorizes for GET /metrics.
	metricsSecure bool
	// enableHTTP2 lets the metrics server speak HTTP/2.
	enableHTTP2 bool
	leaderElect bool
	// namespaces are the only ones watched (WATCH_NAMESPACE); none: all.
	namespaces []string
}

func main() {
	var s settings
	flag.StringVar(&s.metricsAddr, "metrics-bind-address", ":8443", "address of the metrics endpoint (0 turns it off)")
	flag.BoolVar(&s.metricsSecure, "metrics-secure", true, "serve metrics over HTTPS, only to clients allowed to GET /metrics (a token the API server checks); false: plain HTTP to anyone")
	flag.BoolVar(&s.enableHTTP2, "enable-http2", false, "let the metrics server speak HTTP/2 (off: a flood of HTTP/2 streams, CVE-2023-44487 and CVE-2023-39325, costs the server more than the client)")
	flag.StringVar(&s.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&s.leaderElect, "leader-elect", false, "elect a leader, so that only one replica of the operator acts")
	opts := zapOptions()
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	s.namespaces = controllers.WatchNamespaces(os.Getenv("WATCH_NAMESPACE"))

	mgr, err := newManager(ctrl.GetConfigOrDie(), s)
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	log.Info("starting the manager", "namespaces", s.namespaces, "metrics", s.metricsAddr, "metricsSecure", s.metricsSecure)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "the manager stopped with an error")
		os.Exit(1)
	}
}

// zapOptions are the logger's defaults, before the --zap-* flags: JSON
// lines, and no stack trace below DPanic. An error a reconcile returns is
// an expected one (an object the API server refused, a member away); its
// message says what failed, and a stack trace would only make the line
// twenty times longer.
func zapOptions() zap.Options {
	return zap.Options{StacktraceLevel: zapcore.DPanicLevel}
}

// newManager makes the manager with its controllers, metrics and probes.
func newManager(cfg *rest.Config, s settings) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kvv1.AddToScheme(scheme))

	metrics := metricsserver.Options{BindAddress: s.metricsAddr}
	if s.metricsSecure {
		// The certificate is self-signed unless CertDir is given: the
		// scraper authenticates with a token, and a Service monitor that
		// wants to verify the server mounts a certificate (kubebuilder's
		// scaffold does the same).
		metrics.SecureServing = true
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
		if !s.enableHTTP2 {
			metrics.TLSOpts = append(metrics.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(s.namespaces),
		Metrics:                metrics,
		HealthProbeBindAddress: s.probeAddr,
		LeaderElection:         s.leaderElect,
		LeaderElectionID:       "kvstore-operator.kv.kvstore.dev",
		// The process exits right after the manager stops, so handing the
		// lease back is safe, and a new replica (a rollout) takes over at
		// once instead of after the lease expires.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return nil, err
	}
	recorder := mgr.GetEventRecorder("kvstore-operator")
	r := &controllers.KeyValueStoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder,
		// The stores' NetworkPolicies admit the operator by these: the
		// namespace from the downward API, the labels of its manifests.
		Operator: clientaccess.Operator{Namespace: os.Getenv("POD_NAMESPACE"), Labels: map[string]string{"app.kubernetes.io/name": "kvstore-operator"}}}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the controller: %w", err)
	}
	if err := (&controllers.KeyValueStoreBackupReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the backup controller: %w", err)
	}
	if err := (&controllers.BackupScheduleReconciler{Client: mgr.GetClient(), Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the backup schedule controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}
