// Command localcluster runs Parley on a local Kubernetes cluster (see
// docs/local-cluster.md). `make demo` runs `localcluster demo`: the control
// plane and a real node (kubelet, containerd), the operator installed by its Helm chart, admin
// Secrets for this machine's RabbitMQ and PostgreSQL, and the sample
// ChatCluster with 3 replicas; it prints how to connect, then keeps running
// until Ctrl-C and cleans up everything it started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	chatv1alpha1 "github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
	"github.com/parley-chat/parley/test/e2e/cluster"
	"github.com/parley-chat/parley/test/e2e/framework"
)

const usage = `localcluster: Parley on a local Kubernetes cluster: one real node on this machine.

Usage:
  localcluster demo [flags]   the operator and a ChatCluster; prints how to chat; Ctrl-C cleans up
  localcluster up [flags]     the cluster and the operator only; prints the kubeconfig; Ctrl-C cleans up
  localcluster clean          undo what a local cluster that was killed left on this machine

Flags:
`

func main() {
	if len(os.Args) == 2 && os.Args[1] == "clean" {
		if err := cluster.CleanUp(); err != nil {
			fmt.Fprintln(os.Stderr, "localcluster clean:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || (os.Args[1] != "demo" && os.Args[1] != "up") {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet("localcluster "+mode, flag.ExitOnError)
	home, _ := os.UserHomeDir()
	stateHome := os.Getenv("XDG_STATE_HOME")
	if stateHome == "" {
		stateHome = filepath.Join(home, ".local", "state")
	}
	repo := fs.String("repo", ".", "the Parley repository (CRDs, samples, hack/control-plane.sh)")
	bin := fs.String("bin", "bin", "directory with the binaries from `make build`")
	state := fs.String("state-dir", filepath.Join(stateHome, "parley", "local-cluster"), "where the cluster keeps its files (wiped at start)")
	namespace := fs.String("namespace", "parley-demo", "namespace of the demo ChatCluster")
	replicas := fs.Int("replicas", 3, "chat server replicas")
	sample := fs.String("sample", "chat_v1alpha1_chatcluster.yaml", "the ChatCluster from config/samples to apply")
	amqpURL := fs.String("amqp-url", envOr("PARLEY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ admin URI for the ChatCluster")
	mgmtURL := fs.String("amqp-management-url", envOr("PARLEY_TEST_AMQP_MANAGEMENT_URL", "http://127.0.0.1:15672"), "RabbitMQ management API URL (the admin of --amqp-url)")
	pgURL := fs.String("postgres-url", envOr("PARLEY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL admin URI for the ChatCluster")
	verbose := fs.Bool("v", false, "log the cluster's progress and warnings")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{
		mode: mode, repo: *repo, bin: *bin, state: *state, namespace: *namespace, replicas: int32(*replicas),
		sample: *sample, amqpURL: *amqpURL, mgmtURL: *mgmtURL, pgURL: *pgURL, verbose: *verbose,
	}
	if err := d.run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "\nlocalcluster:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type demo struct {
	mode, repo, bin, state, namespace, sample, amqpURL, mgmtURL, pgURL string
	replicas                                                           int32
	verbose                                                            bool
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func (d *demo) run(ctx context.Context) error {
	ctrllog.SetLogger(logr.Discard())
	var err error
	if d.repo, err = filepath.Abs(d.repo); err != nil {
		return err
	}
	if d.bin, err = filepath.Abs(d.bin); err != nil {
		return err
	}
	if err := d.preflight(); err != nil {
		return err
	}
	step("Kubernetes binaries (kubelet, API server, ..., CoreDNS, metrics-server: built from source once per machine; the first time takes 15-25 minutes)")
	assets, err := cluster.DefaultAssets(d.repo)
	if err != nil {
		return err
	}
	logLevel := slog.LevelInfo
	if d.verbose {
		logLevel = slog.LevelDebug
	}
	helm, err := framework.HelmBinary(d.repo)
	if err != nil {
		return err
	}
	step("starting a real node (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS, metrics-server), Parley's image built from %s, and the operator installed with the Helm chart", d.bin)
	start := time.Now()
	env, err := framework.Start(ctx, framework.Options{
		RepoRoot: d.repo, Assets: assets, BinDir: d.bin, Helm: helm, StateDir: filepath.Join(d.state, "cluster"),
		AMQPURL: d.amqpURL, AMQPManagementURL: d.mgmtURL, PostgresURL: d.pgURL, LockWait: time.Second,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})),
	})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the operator and the cluster")
		env.Stop()
		_ = os.RemoveAll(filepath.Join(d.state, "cluster"))
		step("done: nothing of the demo is left running")
	}()
	fmt.Printf("    up in %s; kubeconfig: %s\n", time.Since(start).Round(100*time.Millisecond), env.Kubeconfig)

	if d.mode == "up" {
		fmt.Printf("\n  export KUBECONFIG=%s\n  Pods and Services are reachable from this machine at their pod and cluster IPs.\n  Logs: %s\n\nCtrl-C to stop and clean up.\n", env.Kubeconfig, filepath.Join(env.StateDir, "logs"))
		<-ctx.Done()
		fmt.Println()
		return nil
	}
	cc, err := d.apply(ctx, env)
	if err != nil {
		return err
	}
	// From here on, Ctrl-C deletes the ChatCluster first, so the operator
	// removes its RabbitMQ exchanges and its PostgreSQL database and role.
	defer d.deleteChatCluster(env, cc)

	step("waiting for ChatCluster %s/%s to be Ready", cc.Namespace, cc.Name)
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	t0 := time.Now()
	cc, err = env.WaitReady(waitCtx, cc.Namespace, cc.Name, func(line string) {
		fmt.Printf("    [%5.1fs] %s\n", time.Since(t0).Seconds(), line)
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w\n  operator: kubectl -n %s logs deploy/parley\n  component and pod logs: %s", err, framework.OperatorNamespace, filepath.Join(env.StateDir, "logs"))
	}
	if err := d.printConnect(ctx, env, cc, assets); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Println()
	return nil
}

// preflight says clearly what is missing before anything starts.
func (d *demo) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster runs a kubelet and containerd in a network namespace of its own, which needs root")
	}
	for _, b := range []string{"manager", "chatserver"} {
		if _, err := os.Stat(filepath.Join(d.bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` (or `make demo`, which builds first)", b, d.bin)
		}
	}
	for name, raw := range map[string]string{"RabbitMQ": d.amqpURL, "PostgreSQL": d.pgURL} {
		hp, err := framework.HostPort(raw)
		if err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", hp, 2*time.Second)
		if err != nil {
			return fmt.Errorf("%s is not reachable at %s (run `make services`): %w", name, hp, err)
		}
		c.Close()
	}
	return nil
}

func (d *demo) apply(ctx context.Context, env *framework.Env) (*chatv1alpha1.ChatCluster, error) {
	step("namespace %s; as the platform team: admin Secrets in namespace %s and ChatBackends for this machine's RabbitMQ and PostgreSQL admitting %s",
		d.namespace, framework.PlatformNamespace, d.namespace)
	if err := env.CreateNamespace(ctx, d.namespace); err != nil {
		return nil, err
	}
	rmq, pg, err := env.Backends(ctx, d.namespace)
	if err != nil {
		return nil, err
	}
	cc, err := env.LoadSample(d.sample)
	if err != nil {
		return nil, err
	}
	cc.Namespace = d.namespace
	cc.Spec.Replicas = &d.replicas
	if cc.Spec.Broker == nil && cc.Spec.Database == nil {
		framework.WithBackends(cc, rmq, pg)
	}
	step("applying config/samples/%s with replicas: %d, spec.broker.backend: %s, spec.database.backend: %s (each cluster gets its own vhost, user, role and database)",
		d.sample, d.replicas, rmq, pg)
	if err := env.Client.Create(ctx, cc); err != nil {
		return nil, fmt.Errorf("create ChatCluster: %w", err)
	}
	return cc, nil
}

func (d *demo) deleteChatCluster(env *framework.Env, cc *chatv1alpha1.ChatCluster) {
	step("deleting ChatCluster %s/%s (the operator deletes its RabbitMQ vhost and user, PostgreSQL role and database)", cc.Namespace, cc.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := env.Client.Delete(ctx, cc); err != nil && !strings.Contains(err.Error(), "not found") {
		fmt.Println("    delete:", err)
		return
	}
	for {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(cc), &chatv1alpha1.ChatCluster{})
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			fmt.Println("    the ChatCluster was not gone after 90s; its RabbitMQ exchanges or database may be left behind (see the operator log)")
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *demo) printConnect(ctx context.Context, env *framework.Env, cc *chatv1alpha1.ChatCluster, assets string) error {
	base, err := env.ServiceURL(ctx, cc.Namespace, cc.Name)
	if err != nil {
		return err
	}
	token, err := env.Token(ctx, cc.Namespace, cc.Name, "demo", 24*time.Hour)
	if err != nil {
		return err
	}
	pods, err := env.ReadyPods(ctx, cc.Namespace, cc.Name)
	if err != nil {
		return err
	}
	admin, err := env.ServiceAdminURL(ctx, cc.Namespace, cc.Name)
	if err != nil {
		return err
	}
	ws := framework.WebSocketURL(base)
	parley := filepath.Join(d.bin, "parley")
	if _, err := os.Stat(parley); err != nil {
		parley = "go run ./cmd/parley"
	}
	fmt.Printf(`
Parley is running: ChatCluster %[1]s/%[2]s, %[3]d chat servers behind one address.

  Web client:   %[4]s/
  WebSocket:    %[5]s
  Token (user "demo", 24h):
    %[6]s

  Chat from a terminal (type lines to send; run it in two terminals to talk to yourself):
    export PARLEY_TOKEN=%[6]s
    %[7]s chat --url %[5]s lobby

  Tokens for other users:
    %[7]s token --cluster %[2]s --namespace %[1]s --kubeconfig %[8]s --user alice

  Admin port (operators only; the Ingress never routes to it):
    Metrics:    %[9]s/metrics   Readiness with the reason: %[9]s/readyz
    HTTP API:   %[9]s/api/publish   (X-API-Key: the api-key of Secret %[1]s/%[10]s)

  The replicas one by one (each is its own server):
`, cc.Namespace, cc.Name, len(pods), base, ws, token, parley, env.Kubeconfig, admin, naming.APIKeySecretName(cc.Name))
	for _, p := range pods {
		u, err := env.PodURL(&p)
		if err == nil {
			fmt.Printf("    %-32s %s\n", p.Name, framework.WebSocketURL(u))
		}
	}
	kubectl := "kubectl"
	if _, err := os.Stat(filepath.Join(assets, "kubectl")); err == nil {
		kubectl = filepath.Join(assets, "kubectl")
	}
	fmt.Printf(`
  kubectl:      export KUBECONFIG=%s
                %s get chatclusters,pods -n %s
  Logs:         %s

Ctrl-C stops everything and cleans up (the ChatCluster's vhost, user, role and database included).
`, env.Kubeconfig, kubectl, cc.Namespace, filepath.Join(env.StateDir, "logs"))
	return nil
}
