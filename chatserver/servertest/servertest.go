// Package servertest starts real chat servers (server.Run on a loopback port)
// for tests, with tokens signed by a per-test HS256 key. Any broker and store
// may be plugged in, so the same helpers serve single-node tests with the
// memory backends and multi-node tests with amqp and postgres.
package servertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/broker"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/server"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
	"github.com/parley-chat/parley/chatserver/transport"
)

// Secret is the HS256 key every test server accepts.
var Secret = []byte("parley-test-secret-0123456789abcdef")

// APIKey guards the test servers' HTTP API.
const APIKey = "test-api-key"

// Config returns a config with one namespace per behaviour under test:
//
//	room:     history 100, presence, join/leave, recovery, typing (publish: subscribers)
//	open:     publish by any authenticated user, history/presence readable by any authenticated user
//	news:     publish only through the HTTP API; anonymous may subscribe
//	secret:   subscribe only with a grant or a subscription token
//	dm:       for user-limited channels "dm:#alice,bob"
//	personal: the personal namespace ("personal:#<user>")
//	plain:    no history, no presence
//	grp:      a group namespace: membership decides; members read history
//	          and presence and publish without subscribing
func Config() config.Config {
	hist := config.History{Size: 100, TTL: config.Duration(time.Hour)}
	cfg := config.Default()
	cfg.HTTP.Address = "127.0.0.1:0"
	cfg.HTTP.AdminAddress = "127.0.0.1:0"
	cfg.HTTP.ShutdownGracePeriod = config.Duration(5 * time.Second)
	// Expiry tests wait for 3005 after the grace: keep it short, but long
	// enough that a refresh sent when the ttl runs out arrives on a busy machine.
	cfg.Auth.ExpiredCloseDelay = config.Duration(1500 * time.Millisecond)
	cfg.Log = config.Log{Level: "error", Format: "text"}
	cfg.Namespaces = []config.Namespace{
		{Name: "room", History: hist, Presence: true, JoinLeave: true, Recovery: true, Typing: true},
		{Name: "open", History: hist, Presence: true, AllowPublish: config.PublishAuthenticated, AllowHistory: "authenticated", AllowPresence: "authenticated"},
		{Name: "news", History: hist, Recovery: true, AllowPublish: config.PublishNone, AllowAnonymous: true},
		{Name: "secret", History: hist, AllowSubscribe: "token"},
		{Name: "dm", History: hist, Presence: true, JoinLeave: true, Recovery: true},
		{Name: "personal", Personal: true, History: hist, Recovery: true, AllowPublish: config.PublishNone},
		{Name: "plain"},
		{Name: "grp", Group: true, History: hist, Presence: true, JoinLeave: true, Recovery: true, Typing: true,
			AllowPublish: config.PublishAuthenticated, AllowHistory: config.PublishAuthenticated, AllowPresence: config.PublishAuthenticated},
	}
	return cfg
}

// Server is a running chat server.
type Server struct {
	// Addr is the public listener's host:port; WS is the WebSocket URL; HTTP
	// the public base URL (web page, /healthz, terse /readyz).
	Addr, WS, HTTP string
	// AdminAddr is the admin listener's host:port; Admin its base URL
	// (/api/*, /metrics, detailed /readyz).
	AdminAddr, Admin string
	Node             *node.Node
	Conns            *transport.Handler
	Config           config.Config

	cancel context.CancelFunc
	done   chan error
}

// Backends returns memory backends, or those given.
func Backends(b broker.Broker, s store.Store) server.Backends {
	return func(context.Context, config.Config, string, *slog.Logger) (broker.Broker, store.Store, error) {
		if b == nil {
			b = brokermemory.New()
		}
		if s == nil {
			s = storememory.New(storememory.Options{})
		}
		return b, s, nil
	}
}

// Start runs a server with cfg (its auth section is replaced by the test key
// unless cfg already names key files) and stops it when the test ends. b and s
// may be nil for the memory implementations; Start closes them on shutdown.
func Start(t testing.TB, cfg config.Config, b broker.Broker, s store.Store) *Server {
	t.Helper()
	level := slog.LevelError
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return StartWithLogger(t, cfg, b, s, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// StartWithLogger is Start with the server logging to log (tests that read
// what the server logs).
func StartWithLogger(t testing.TB, cfg config.Config, b broker.Broker, s store.Store, log *slog.Logger) *Server {
	t.Helper()
	return StartWithBackends(t, cfg, Backends(b, s), log)
}

// StartWithBackends is Start with the broker and store built by backends
// (server.DefaultBackends builds what cfg names, as the real binary does).
func StartWithBackends(t testing.TB, cfg config.Config, backends server.Backends, log *slog.Logger) *Server {
	t.Helper()
	dir := t.TempDir()
	if len(cfg.Auth.HMACSecretFiles) == 0 {
		keyFile := filepath.Join(dir, "hmac")
		if err := os.WriteFile(keyFile, Secret, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth.HMACSecretFiles = []string{keyFile}
	}
	if len(cfg.HTTP.APIKeyPaths()) == 0 {
		keyFile := filepath.Join(dir, "apikey")
		if err := os.WriteFile(keyFile, []byte(APIKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.HTTP.APIKeyFile = keyFile
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{Config: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		srv.done <- server.Run(ctx, cfg, log, server.Options{
			Backends:      backends,
			Listener:      ln,
			AdminListener: adminLn,
			OnNode:        func(n *node.Node, ws *transport.Handler) { srv.Node, srv.Conns = n, ws },
			Ready: func(public, admin string) {
				srv.Addr, srv.AdminAddr = public, admin
				close(ready)
			},
		})
	}()
	select {
	case <-ready:
	case err := <-srv.done:
		t.Fatalf("server did not start: %v", err)
	}
	srv.WS = "ws://" + srv.Addr + transport.Path
	srv.HTTP = "http://" + srv.Addr
	srv.Admin = "http://" + srv.AdminAddr
	t.Cleanup(func() { srv.Stop(t) })
	return srv
}

// Stop shuts the server down gracefully (idempotent).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("server did not stop within 15s")
	}
}

// TokenClaims builds a connection token's claims for user valid for ttl.
func TokenClaims(user string, ttl time.Duration) *auth.ConnectionClaims {
	c := &auth.ConnectionClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: user}}
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
	}
	return c
}

// Sign signs claims with key (HS256).
func Sign(t testing.TB, claims jwt.Claims, key []byte) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Token is a connection token for user valid for an hour.
func Token(t testing.TB, user string) string {
	return Sign(t, TokenClaims(user, time.Hour), Secret)
}

// SubToken is a subscription token for user and channel valid for an hour.
func SubToken(t testing.TB, user, channel string) string {
	c := &auth.SubscriptionClaims{Channel: channel, RegisteredClaims: jwt.RegisteredClaims{
		Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}}
	return Sign(t, c, Secret)
}
