package web_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

const chromiumPath = "/usr/bin/chromium"

// browserDeps makes sure Chromium, node and the npm packages are there,
// installing them with hack/browser-deps.sh when they are not. It skips the
// test only when that install fails (no apt, no root, no registry).
func browserDeps(t *testing.T) (node string) {
	t.Helper()
	ready := func() bool {
		_, errC := os.Stat(chromiumPath)
		_, errP := os.Stat("node_modules/playwright-core/package.json")
		_, errN := exec.LookPath("node")
		return errC == nil && errP == nil && errN == nil
	}
	if !ready() {
		cmd := exec.Command("../../hack/browser-deps.sh")
		out, err := cmd.CombinedOutput()
		if err != nil || !ready() {
			t.Skipf("SKIP real-browser test: Chromium, node or playwright-core are missing and could not be installed "+
				"(run hack/browser-deps.sh as root to see why): %v\n%s", err, out)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// startReplica starts a chat server replica the way a ChatCluster's pods run:
// its own RabbitMQ connection on the cluster's exchanges and its own
// PostgreSQL pool on the cluster's database.
func startReplica(t *testing.T, i int, top testenv.Topology, db testenv.Database) *servertest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.New(ctx, db.URL, postgres.Options{MaxConns: 4, RetentionInterval: -1})
	if err != nil {
		t.Fatalf("replica %d store: %v", i, err)
	}
	br, err := amqp.New(amqp.Options{URL: testenv.AMQPURL(), Exchange: top.Exchange, ControlExchange: top.ControlExchange})
	if err != nil {
		_ = st.Close()
		t.Fatalf("replica %d broker: %v", i, err)
	}
	cfg := servertest.Config()
	cfg.Web.Enabled = true
	cfg.Broker.Type, cfg.Broker.Exchange, cfg.Broker.ControlExchange = "amqp", top.Exchange, top.ControlExchange
	cfg.Store.Type = "postgres"
	srv := servertest.Start(t, cfg, br, st) // closes br and st when it stops
	deadline := time.Now().Add(15 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := srv.Node.Ready(rctx)
		cancel()
		if err == nil {
			return srv
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d not ready: %v", i, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestBrowserChat runs test/browser.mjs: two people in two browser contexts
// of headless Chromium, each signed in on a different replica. The replicas
// share only what a ChatCluster's replicas share: RabbitMQ exchanges and a
// PostgreSQL database (fresh ones for this test). Replica B sits behind a TCP
// proxy the script can cut to drop the connection the way a failing network
// does. Screenshots land in artifacts/web/ at the repository root.
func TestBrowserChat(t *testing.T) {
	if testing.Short() {
		t.Skip("real-browser test skipped in -short mode")
	}
	node := browserDeps(t)

	top := testenv.NewTopology(t)
	db := testenv.NewDatabase(t, "parley_web")
	a := startReplica(t, 0, top, db)
	b := startReplica(t, 1, top, db)
	proxy, err := tcpproxy.New(b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })

	mux := http.NewServeMux()
	mux.HandleFunc("POST /proxy/disable", func(http.ResponseWriter, *http.Request) { proxy.Disable() })
	mux.HandleFunc("POST /proxy/enable", func(http.ResponseWriter, *http.Request) { proxy.Enable() })
	control := httptest.NewServer(mux)
	t.Cleanup(control.Close)

	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	artifacts := artifactsDir(t, "web")
	removeOldScreenshots(artifacts)
	runBrowserScript(t, node, "test/browser.mjs", 3*time.Minute, 13,
		"PARLEY_URL_A="+a.HTTP,
		"PARLEY_ADMIN_URL_A="+a.Admin, // the HTTP API is on the admin listener
		"PARLEY_URL_B=http://"+proxy.Addr(),
		"PARLEY_TOKEN_ALICE="+servertest.Token(t, "alice"),
		"PARLEY_TOKEN_BOB="+servertest.Token(t, "bob"),
		"PARLEY_API_KEY="+servertest.APIKey,
		"PARLEY_CONTROL="+control.URL,
		"PARLEY_ROOM=room:web-"+hex.EncodeToString(rnd[:]),
		"PARLEY_ARTIFACTS="+artifacts,
		"PARLEY_CHROMIUM="+chromiumPath,
	)
	t.Logf("screenshots in %s", artifacts)
}
