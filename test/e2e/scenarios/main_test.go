// Package scenarios are Parley's end-to-end tests on a real Kubernetes node
// (test/e2e/cluster: kubelet, containerd, runc, kube-proxy, CoreDNS,
// metrics-server): the operator installed by its Helm chart from Parley's
// image, a ChatCluster applied in a namespace that enforces Pod Security
// "restricted", this machine's RabbitMQ and PostgreSQL reached through
// Services, and real clients (centrifuge-go) through apply, chat, scaling, a
// rolling config change, killed containers, a lost broker and deletion. Each
// scenario reports what it sent, delivered and recovered, and that nothing
// acknowledged was lost.
package scenarios

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/parley-chat/parley/internal/testenv"
	"github.com/parley-chat/parley/test/e2e/cluster"
	"github.com/parley-chat/parley/test/e2e/framework"
)

var (
	env     *framework.Env
	skipWhy string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard())
	if os.Geteuid() != 0 {
		skipWhy = "the local cluster's node needs root (network namespace, containerd, the kubelet)"
		return m.Run()
	}
	root := testenv.RepoRoot()
	tmp, err := os.MkdirTemp("", "parley-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, err := cluster.BinDir(root, filepath.Join(tmp, "bin"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, b := range []string{"manager", "chatserver"} {
		st, err := os.Stat(filepath.Join(bin, b))
		if err != nil {
			fmt.Fprintf(os.Stderr, "no %s binary in %s: %v\n", b, bin, err)
			return 1
		}
		fmt.Printf("e2e image from %s (built %s)\n", filepath.Join(bin, b), st.ModTime().Format(time.RFC3339))
	}
	assets, err := cluster.DefaultAssets(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	helm, err := framework.HelmBinary(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute) // includes waiting for another package's cluster
	defer cancel()
	start := time.Now()
	env, err = framework.Start(ctx, framework.Options{
		RepoRoot: root, Assets: assets, BinDir: bin, Helm: helm, StateDir: filepath.Join(tmp, "state"),
		AMQPURL: testenv.AMQPURL(), AMQPManagementURL: testenv.AMQPManagementURL(), PostgresURL: testenv.PostgresURL(),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the local cluster and the operator:", err)
		if env == nil {
			cluster.DumpLogs(filepath.Join(tmp, "state"), 3000)
		}
		return 1
	}
	fmt.Printf("local cluster (real node) and operator (Helm, image %s) up in %s\n", env.ParleyImage, time.Since(start).Round(10*time.Millisecond))
	code := m.Run()
	env.Stop()
	if code != 0 {
		cluster.DumpLogs(env.StateDir, 4000)
	}
	return code
}

func need(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}
