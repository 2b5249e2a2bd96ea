package web_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// refusingProxy is an HTTP proxy in front of a replica that refuses some
// paths (403, as a proxy that breaks WebSocket does) and can cut every
// request in flight, streams included.
type refusingProxy struct {
	proxy   *httputil.ReverseProxy
	refused []string

	mu  sync.Mutex
	ctx context.Context
	cut context.CancelFunc
}

func newRefusingProxy(t *testing.T, target string, refused ...string) *refusingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &refusingProxy{proxy: httputil.NewSingleHostReverseProxy(u), refused: refused}
	p.proxy.FlushInterval = -1 // pass streams on as they come
	p.proxy.ErrorLog = nil
	p.ctx, p.cut = context.WithCancel(context.Background())
	t.Cleanup(func() { p.cut() })
	return p
}

func (p *refusingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, path := range p.refused {
		if strings.HasPrefix(r.URL.Path, path) {
			http.Error(w, "refused by the proxy", http.StatusForbidden)
			return
		}
	}
	p.mu.Lock()
	gen := p.ctx
	p.mu.Unlock()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(gen, cancel)
	defer stop()
	p.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// Cut ends every request in flight.
func (p *refusingProxy) Cut() {
	p.mu.Lock()
	p.cut()
	p.ctx, p.cut = context.WithCancel(context.Background())
	p.mu.Unlock()
}

// TestBrowserFallbacks runs test/browser-fallback.mjs: the web page in
// headless Chromium behind a proxy that refuses WebSocket falls back to
// HTTP-streaming; with HTTP-streaming refused too, to SSE. Each run signs in,
// chats and recovers after the proxy cuts the stream, on a replica with the
// real RabbitMQ and PostgreSQL.
func TestBrowserFallbacks(t *testing.T) {
	if testing.Short() {
		t.Skip("real-browser test skipped in -short mode")
	}
	node := browserDeps(t)
	top := testenv.NewTopology(t)
	db := testenv.NewDatabase(t, "parley_fallback")
	replica := startReplica(t, 0, top, db)
	artifacts := artifactsDir(t, "web")
	for _, tc := range []struct {
		transport string
		refused   []string
	}{
		{"http_stream", []string{"/connection/websocket"}},
		{"sse", []string{"/connection/websocket", "/connection/http_stream"}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			proxy := newRefusingProxy(t, replica.HTTP, tc.refused...)
			front := httptest.NewServer(proxy)
			t.Cleanup(front.Close)
			mux := http.NewServeMux()
			mux.HandleFunc("POST /cut", func(http.ResponseWriter, *http.Request) { proxy.Cut() })
			control := httptest.NewServer(mux)
			t.Cleanup(control.Close)

			var rnd [4]byte
			_, _ = rand.Read(rnd[:])
			runBrowserScript(t, node, "test/browser-fallback.mjs", 2*time.Minute, 3,
				"PARLEY_URL="+front.URL,
				"PARLEY_ADMIN_URL="+replica.Admin,
				"PARLEY_API_KEY="+servertest.APIKey,
				"PARLEY_TOKEN="+servertest.Token(t, "carol"),
				"PARLEY_CONTROL="+control.URL,
				"PARLEY_ROOM=room:fallback-"+tc.transport+"-"+hex.EncodeToString(rnd[:]),
				"PARLEY_TRANSPORT="+tc.transport,
				"PARLEY_ARTIFACTS="+artifacts,
				"PARLEY_CHROMIUM="+chromiumPath,
			)
		})
	}
}
