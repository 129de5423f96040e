// Command manager runs the kvstore operator: the KeyValueStore controller
// with leader election, metrics and health probes.
package main

import (
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kvv1 "github.com/kvstore-operator/kvstore-operator/api/v1alpha1"
	"github.com/kvstore-operator/kvstore-operator/controllers"
	"github.com/kvstore-operator/kvstore-operator/controllers/clientaccess"
)

func main() {
	var metricsAddr, probeAddr string
	var leaderElect bool
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint (0 turns it off)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader, so that only one replica of the operator acts")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kvv1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "kvstore-operator.kv.kvstore.dev",
		// The process exits right after the manager stops, so handing the
		// lease back is safe, and a new replica (a rollout) takes over at
		// once instead of after the lease expires.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	r := &controllers.KeyValueStoreReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kvstore-operator"),
		// The stores' NetworkPolicies admit the operator by these: the
		// namespace from the downward API, the labels of its manifests.
		Operator: clientaccess.Operator{Namespace: os.Getenv("POD_NAMESPACE"), Labels: map[string]string{"app.kubernetes.io/name": "kvstore-operator"}}}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to set up the controller")
		os.Exit(1)
	}
	if err := (&controllers.KeyValueStoreBackupReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kvstore-operator")}).SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to set up the backup controller")
		os.Exit(1)
	}
	if err := (&controllers.BackupScheduleReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kvstore-operator")}).SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to set up the backup schedule controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	log.Info("starting the manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "the manager stopped with an error")
		os.Exit(1)
	}
}
