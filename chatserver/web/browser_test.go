package web_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/servertest"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
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

// TestBrowserChat runs test/browser.mjs: two people in two browser contexts
// of headless Chromium, each signed in on a different replica (two chat
// servers sharing one broker network and one store, as replicas share
// RabbitMQ and PostgreSQL). Replica B sits behind a TCP proxy the script
// can cut to drop the connection the way a failing network does.
// Screenshots land in artifacts/web/ at the repository root.
func TestBrowserChat(t *testing.T) {
	if testing.Short() {
		t.Skip("real-browser test skipped in -short mode")
	}
	node := browserDeps(t)

	network := brokermemory.NewNetwork()
	store := storememory.New(storememory.Options{})
	cfg := servertest.Config()
	cfg.Web.Enabled = true
	a := servertest.Start(t, cfg, network.NewBroker(), store)
	b := servertest.Start(t, cfg, network.NewBroker(), store)
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
	artifacts := os.Getenv("PARLEY_ARTIFACTS")
	if artifacts == "" {
		abs, err := filepath.Abs("../../artifacts/web")
		if err != nil {
			t.Fatal(err)
		}
		artifacts = abs
	}

	// Screenshots of an earlier run would be mistaken for this run's.
	if old, err := filepath.Glob(filepath.Join(artifacts, "[0-9][0-9]-*.png")); err == nil {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "test/browser.mjs")
	cmd.Env = append(os.Environ(),
		"PARLEY_URL_A="+a.HTTP,
		"PARLEY_URL_B=http://"+proxy.Addr(),
		"PARLEY_TOKEN_ALICE="+servertest.Token(t, "alice"),
		"PARLEY_TOKEN_BOB="+servertest.Token(t, "bob"),
		"PARLEY_API_KEY="+servertest.APIKey,
		"PARLEY_CONTROL="+control.URL,
		"PARLEY_ROOM=room:web-"+hex.EncodeToString(rnd[:]),
		"PARLEY_ARTIFACTS="+artifacts,
		"PARLEY_CHROMIUM="+chromiumPath,
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		steps []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			t.Log(line)
			if strings.HasPrefix(line, "ok ") {
				steps = append(steps, line)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("browser script failed after %d steps: %v (screenshots in %s)", len(steps), err, artifacts)
	}
	const wantSteps = 11
	if len(steps) != wantSteps {
		t.Fatalf("browser script passed %d steps, want %d", len(steps), wantSteps)
	}
	t.Logf("screenshots in %s", artifacts)
}
