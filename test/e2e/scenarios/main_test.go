// Package scenarios are Parley's end-to-end tests: a ChatCluster applied to
// the local cluster (real control plane and controller manager, the operator
// binary, chat servers as processes, this machine's RabbitMQ and PostgreSQL)
// and used by real clients (centrifuge-go) through apply, chat, scaling, a
// rolling config change, killed pods, a lost broker and deletion. Each
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
	env         *framework.Env
	brokerProxy *framework.TCPProxy
	skipWhy     string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard())
	if os.Geteuid() != 0 {
		skipWhy = "the local cluster's node agent needs root (network and mount namespaces per pod)"
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
		fmt.Printf("e2e runs %s (built %s)\n", filepath.Join(bin, b), st.ModTime().Format(time.RFC3339))
	}
	assets, err := cluster.DefaultAssets(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	amqpHost, err := framework.HostPort(testenv.AMQPURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The chat servers and the operator reach RabbitMQ through this proxy,
	// so a scenario can take the broker away without touching the shared one.
	if brokerProxy, err = framework.NewTCPProxy(amqpHost); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer brokerProxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	env, err = framework.Start(ctx, framework.Options{
		RepoRoot: root, Assets: assets, BinDir: bin, StateDir: filepath.Join(tmp, "state"),
		AMQPURL: testenv.AMQPURL(), PostgresURL: testenv.PostgresURL(),
		ExtraHostEndpoints: []string{brokerProxy.Addr()},
		Log:                slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the local cluster and the operator:", err)
		return 1
	}
	fmt.Printf("local cluster and operator up in %s\n", time.Since(start).Round(10*time.Millisecond))
	code := m.Run()
	if code != 0 {
		cluster.DumpLogs(env.StateDir, 4000)
	}
	env.Stop()
	return code
}

func need(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}
