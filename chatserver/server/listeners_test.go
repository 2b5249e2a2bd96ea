package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/server"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// get fetches url with client (http.DefaultClient when nil) and returns the
// status and body.
func get(t *testing.T, client *http.Client, method, url, apiKey, body string) (int, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if apiKey != "" {
		req.Header.Set("X-API-Key", apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// The public listener never serves the HTTP API or the metrics, whatever the
// web page setting (its catch-all "/" must not swallow them either); the
// admin listener serves both.
func TestPublicAndAdminListenersServeTheirOwnRoutes(t *testing.T) {
	for _, webEnabled := range []bool{true, false} {
		name := "web page off"
		if webEnabled {
			name = "web page on"
		}
		t.Run(name, func(t *testing.T) {
			cfg := servertest.Config()
			cfg.Web.Enabled = webEnabled
			srv := servertest.Start(t, cfg, nil, nil)
			if srv.Addr == srv.AdminAddr {
				t.Fatalf("one address for both listeners: %s", srv.Addr)
			}
			publish := `{"channel":"news:ports","data":{"text":"hi"}}`

			for _, tc := range []struct{ method, path, body string }{
				{http.MethodPost, "/api/publish", publish},
				{http.MethodPost, "/api/history", `{"channel":"news:ports"}`},
				{http.MethodPost, "/api/disconnect", `{"user":"alice"}`},
				{http.MethodGet, "/api/", ""},
				{http.MethodGet, "/metrics", ""},
			} {
				// With the right key too: the key is no way onto the public port.
				if code, body := get(t, nil, tc.method, srv.HTTP+tc.path, servertest.APIKey, tc.body); code != http.StatusNotFound {
					t.Errorf("public %s %s: %d %.80q, want 404", tc.method, tc.path, code, body)
				}
			}
			if code, body := get(t, nil, http.MethodPost, srv.Admin+"/api/publish", servertest.APIKey, publish); code != http.StatusOK || !strings.Contains(body, `"result"`) {
				t.Errorf("admin /api/publish: %d %s", code, body)
			}
			if code, _ := get(t, nil, http.MethodPost, srv.Admin+"/api/publish", "", publish); code != http.StatusUnauthorized {
				t.Errorf("admin /api/publish without a key: %d, want 401", code)
			}
			if code, body := get(t, nil, http.MethodGet, srv.Admin+"/metrics", "", ""); code != http.StatusOK || !strings.Contains(body, "parley_connections") {
				t.Errorf("admin /metrics: %d %.200q", code, body)
			}
			for _, base := range []string{srv.HTTP, srv.Admin} {
				if code, body := get(t, nil, http.MethodGet, base+"/healthz", "", ""); code != http.StatusOK || body != "ok\n" {
					t.Errorf("%s/healthz: %d %q", base, code, body)
				}
				if code, body := get(t, nil, http.MethodGet, base+"/readyz", "", ""); code != http.StatusOK || body != "ok\n" {
					t.Errorf("%s/readyz: %d %q", base, code, body)
				}
			}
			// The WebSocket is public only.
			servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
			if code, _ := get(t, nil, http.MethodGet, srv.Admin+"/connection/websocket", "", ""); code != http.StatusNotFound {
				t.Errorf("admin /connection/websocket: %d, want 404", code)
			}
		})
	}
}

// failing wraps the memory broker and store; once set, their readiness
// checks fail with an error carrying internal details (addresses, users).
type failing struct {
	err atomic.Pointer[error]
}

func (f *failing) fail(err error) { f.err.Store(&err) }

func (f *failing) current() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

type failingBroker struct {
	broker.Broker
	f *failing
}

func (b failingBroker) Ready(ctx context.Context) error {
	if err := b.f.current(); err != nil {
		return err
	}
	return b.Broker.Ready(ctx)
}

type failingStore struct {
	store.Store
	f *failing
}

func (s failingStore) Position(ctx context.Context, channel string) (message.StreamPosition, error) {
	if err := s.f.current(); err != nil {
		return message.StreamPosition{}, err
	}
	return s.Store.Position(ctx, channel)
}

// /readyz on the public port says "not ready" and nothing more: the reason
// names the broker or store and their errors, which anonymous callers must
// not read. The admin port gives the reason.
func TestPublicReadyzHidesTheReason(t *testing.T) {
	const internal = "dial tcp 10.3.7.21:5672: connect: connection refused (user parley-ns-chat)"
	for _, which := range []string{"broker", "store"} {
		t.Run(which, func(t *testing.T) {
			f := &failing{}
			var b broker.Broker = brokermemory.New()
			var s store.Store = storememory.New(storememory.Options{})
			cfg := servertest.Config()
			if which == "broker" {
				b = failingBroker{b, f}
				// A broker outage turns a replica unready only past the grace.
				cfg.Broker.ReadinessGrace = config.Duration(time.Millisecond)
			} else {
				s = failingStore{s, f}
			}
			srv := servertest.Start(t, cfg, b, s)
			if code, body := get(t, nil, http.MethodGet, srv.HTTP+"/readyz", "", ""); code != http.StatusOK {
				t.Fatalf("ready before the failure: %d %q", code, body)
			}
			f.fail(errors.New(internal))
			if which == "broker" {
				// The first failed check starts the outage; the grace runs out after it.
				if code, body := get(t, nil, http.MethodGet, srv.Admin+"/readyz", "", ""); code != http.StatusOK || !strings.Contains(body, "degraded: broker unreachable") {
					t.Errorf("admin /readyz at the start of a broker outage: %d %q, want 200 degraded", code, body)
				}
				time.Sleep(5 * time.Millisecond)
			}

			code, body := get(t, nil, http.MethodGet, srv.HTTP+"/readyz", "", "")
			if code != http.StatusServiceUnavailable || body != "not ready\n" {
				t.Errorf("public /readyz: %d %q, want 503 \"not ready\\n\"", code, body)
			}
			for _, leak := range []string{"10.3.7.21", "parley-ns-chat", which} {
				if strings.Contains(body, leak) {
					t.Errorf("public /readyz shows %q: %q", leak, body)
				}
			}
			code, body = get(t, nil, http.MethodGet, srv.Admin+"/readyz", "", "")
			if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: "+which+": ") || !strings.Contains(body, internal) {
				t.Errorf("admin /readyz: %d %q, want 503 with the %s error", code, body, which)
			}
		})
	}
}

// Cancelling Run closes both listeners within the grace period: neither port
// accepts a connection afterwards.
func TestShutdownClosesBothListeners(t *testing.T) {
	cfg := servertest.Config()
	cfg.HTTP.ShutdownGracePeriod = config.Duration(2 * time.Second)
	srv := servertest.Start(t, cfg, nil, nil)
	// A keep-alive connection on each port: Shutdown must close idle
	// connections, not just stop accepting new ones.
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, base := range []string{srv.HTTP, srv.Admin} {
		if code, _ := get(t, client, http.MethodGet, base+"/healthz", "", ""); code != http.StatusOK {
			t.Fatalf("%s/healthz: %d", base, code)
		}
	}
	start := time.Now()
	srv.Stop(t)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("shutdown took %s with a 2s grace period", took)
	}
	for _, addr := range []string{srv.Addr, srv.AdminAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			t.Errorf("%s still accepts connections after shutdown", addr)
		}
	}
	for _, base := range []string{srv.HTTP, srv.Admin} {
		if _, err := client.Get(base + "/healthz"); err == nil {
			t.Errorf("%s still answers over a kept-alive connection after shutdown", base)
		}
	}
}

// With http.tls set, both listeners serve TLS with the one certificate.
func TestTLSOnBothListeners(t *testing.T) {
	certFile, keyFile := writeCert(t, t.TempDir(), "both")
	cfg := servertest.Config()
	cfg.HTTP.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
	srv := servertest.Start(t, cfg, nil, nil)
	for _, addr := range []string{srv.Addr, srv.AdminAddr} {
		if cn := servedCN(t, addr); cn != "both" {
			t.Errorf("%s served certificate %q", addr, cn)
		}
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test certificate
	defer client.CloseIdleConnections()
	if code, body := get(t, client, http.MethodGet, "https://"+srv.AdminAddr+"/metrics", "", ""); code != http.StatusOK || !strings.Contains(body, "parley_connections") {
		t.Errorf("admin /metrics over TLS: %d", code)
	}
	// Plain HTTP on the admin port is refused, not served in the clear.
	if code, _ := get(t, nil, http.MethodGet, srv.Admin+"/metrics", "", ""); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS admin port: %d, want 400", code)
	}
}

// An admin address that cannot be listened on fails the start with an error
// naming the key, and the public listener it had opened is closed again.
func TestAdminListenFailureNamesTheKey(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := servertest.Config()
	cfg.Auth = config.Auth{AllowAnonymous: true}
	cfg.HTTP.AdminAddress = taken.Addr().String()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err = server.Run(t.Context(), cfg, log, server.Options{Backends: servertest.Backends(nil, nil), Listener: public})
	if err == nil || !strings.Contains(err.Error(), "http.adminAddress") {
		t.Fatalf("got %v, want an error naming http.adminAddress", err)
	}
	if c, err := net.DialTimeout("tcp", public.Addr().String(), time.Second); err == nil {
		_ = c.Close()
		t.Error("the public listener is still open after the failed start")
	}
}
