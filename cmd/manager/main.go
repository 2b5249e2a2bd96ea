// Command manager runs the Parley operator: flags → manager → ChatCluster reconciler.
package main

import (
	"flag"
	"fmt"
	"github.com/parley-chat/parley/chatserver/version"
	"os"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/parley-chat/parley/controllers"
	"github.com/parley-chat/parley/internal/resource"
)

func main() {
	var (
		watchNamespaces  string
		leaderElect      bool
		leaderElectionID string
		leaderElectionNS string
		metrics          controllers.MetricsServing
		probeAddr        string
		chatServerImage  string
		clusterDomain    string
		qps              float64
		burst            int
		concurrency      int
		resync           time.Duration
		kindRecheck      time.Duration
		prov             controllers.Provisioning
	)
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "comma-separated namespaces to watch; empty watches all")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so only one replica reconciles")
	flag.StringVar(&leaderElectionID, "leader-election-id", "parley-operator.chat.parley.io", "name of the leader election Lease")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease (default: the pod's namespace)")
	flag.StringVar(&metrics.BindAddress, "metrics-bind-address", controllers.DefaultMetricsBindAddress, "address of the metrics endpoint; 0 turns it off")
	flag.BoolVar(&metrics.Secure, "metrics-secure", true,
		"serve metrics over HTTPS to callers the API server authenticates and authorizes (get on /metrics); false: plain HTTP to anyone")
	flag.StringVar(&metrics.CertPath, "metrics-cert-path", "", "directory of the metrics serving certificate (e.g. a mounted cert-manager Secret); empty: self-signed")
	flag.StringVar(&metrics.CertName, "metrics-cert-name", "tls.crt", "certificate file in --metrics-cert-path")
	flag.StringVar(&metrics.KeyName, "metrics-cert-key", "tls.key", "key file in --metrics-cert-path")
	flag.BoolVar(&metrics.EnableHTTP2, "enable-http2", false, "serve metrics over HTTP/2 too (off: HTTP/2 Rapid Reset and Stream Cancellation attacks)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flag.StringVar(&chatServerImage, "chat-server-image", "ghcr.io/parley-chat/parley:latest", "chat server image for ChatClusters that do not name one")
	flag.StringVar(&clusterDomain, "cluster-domain", resource.DefaultClusterDomain, "the cluster's DNS domain, for endpoint URLs")
	flag.Float64Var(&qps, "kube-api-qps", 20, "queries per second to the API server")
	flag.IntVar(&burst, "kube-api-burst", 30, "burst of queries to the API server")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles,
		"ChatClusters reconciled in parallel (at most --backend-concurrency of them call one backend at a time)")
	flag.DurationVar(&resync, "resync-period", 10*time.Minute, "how often an unchanged ChatCluster is checked again")
	flag.DurationVar(&kindRecheck, "kind-recheck-interval", controllers.DefaultKindRecheckInterval,
		"how often discovery is asked whether the ServiceMonitor or PrometheusRule CRD appeared, so they are watched and created without a restart")
	flag.DurationVar(&prov.CleanupRetryFor, "cleanup-retry-for", controllers.DefaultCleanupRetryFor,
		"how long, from its first failure, the deletion of a ChatCluster's RabbitMQ vhost or topology or PostgreSQL database is retried before it is left behind (with an event)")
	flag.DurationVar(&prov.CleanupBackoff, "cleanup-backoff", controllers.DefaultCleanupBackoff,
		"wait after the first failed cleanup attempt, doubled after each further one up to --cleanup-max-backoff")
	flag.DurationVar(&prov.CleanupMaxBackoff, "cleanup-max-backoff", controllers.DefaultCleanupMaxBackoff,
		"longest wait between two cleanup attempts")
	flag.DurationVar(&prov.CallTimeout, "external-call-timeout", controllers.DefaultCallTimeout,
		"timeout of one call to RabbitMQ or PostgreSQL")
	flag.DurationVar(&prov.ConnectTimeout, "external-connect-timeout", controllers.DefaultConnectTimeout,
		"timeout of connecting to RabbitMQ or PostgreSQL (dial and handshake), within --external-call-timeout")
	flag.IntVar(&prov.BackendConcurrency, "backend-concurrency", controllers.DefaultBackendConcurrency,
		"calls in flight to one backend (a ChatBackend, or the host:port of a deprecated admin URI); the other clusters on it wait without holding a worker")
	flag.DurationVar(&prov.UnreachableBackoff, "unreachable-backoff", controllers.DefaultUnreachableBackoff,
		"wait after a backend could not be reached before the next call to it, doubled after each further failure up to 5m")
	flag.DurationVar(&prov.CheckInterval, "external-check-interval", 0,
		"how long a successful RabbitMQ declare or PostgreSQL check is trusted before the next repairs drift; 0: the resync period")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(watchNamespaces, leaderElect, leaderElectionID, leaderElectionNS, metrics, probeAddr,
		controllers.Options{DefaultImage: chatServerImage, ClusterDomain: clusterDomain, ResyncPeriod: resync, MaxConcurrentReconciles: concurrency, KindRecheckInterval: kindRecheck},
		prov, float32(qps), burst); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run(watchNamespaces string, leaderElect bool, leID, leNS string, metrics controllers.MetricsServing, probeAddr string, opts controllers.Options, prov controllers.Provisioning, qps float32, burst int) error {
	if opts.DefaultImage == "" {
		return fmt.Errorf("--chat-server-image must not be empty")
	}
	if err := prov.ValidateFlags(); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = qps, burst

	var namespaces []string
	for ns := range strings.SplitSeq(watchNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  controllers.NewScheme(),
		Cache:                   controllers.CacheOptions(namespaces),
		Metrics:                 metrics.Options(),
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        leID,
		LeaderElectionNamespace: leNS,
		// A new leader takes over at once when the old one exits cleanly.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := (&controllers.ChatClusterReconciler{Options: opts, Provisioning: prov}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up ChatCluster controller: %w", err)
	}
	if err := (&controllers.ChatBackendReconciler{Options: opts, Tenants: prov.Tenants, Database: prov.Database, CallTimeout: prov.CallTimeout}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up ChatBackend controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "version", version.Version, "commit", version.Commit, "namespaces", namespaces, "chatServerImage", opts.DefaultImage)
	return mgr.Start(ctrl.SetupSignalHandler())
}
