// Package server assembles a chat server from its config: broker and store,
// node, WebSocket transport, HTTP API, TLS; and runs it until its context ends,
// then drains gracefully. cmd/chatserver is a thin main around Run.
//
// It serves two listeners. The public one (http.address) is what clients and
// the internet reach: the WebSocket, the web page, /healthz and a terse
// /readyz. The admin one (http.adminAddress) is for operators: the HTTP API,
// /metrics and a /readyz that says why. Keeping them on separate ports lets a
// Service, an Ingress and a NetworkPolicy expose one without the other.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
	brokeramqp "github.com/parley-chat/parley/chatserver/broker/amqp"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/httpapi"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/session"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
	storepostgres "github.com/parley-chat/parley/chatserver/store/postgres"
	"github.com/parley-chat/parley/chatserver/transport"
	"github.com/parley-chat/parley/chatserver/web"
)

// Backends builds the broker and store a config asks for; nodeID names this
// replica in the broker. Run uses DefaultBackends unless Options.Backends is set.
type Backends func(ctx context.Context, cfg config.Config, nodeID string, log *slog.Logger) (broker.Broker, store.Store, error)

// DefaultBackends builds what cfg names: memory, amqp (RabbitMQ) or postgres.
func DefaultBackends(ctx context.Context, cfg config.Config, nodeID string, log *slog.Logger) (broker.Broker, store.Store, error) {
	var (
		b   broker.Broker
		s   store.Store
		err error
	)
	switch cfg.Broker.Type {
	case "memory":
		b = brokermemory.New()
	case "amqp":
		if b, err = brokeramqp.Open(cfg.Broker, nodeID, log); err != nil {
			return nil, nil, fmt.Errorf("broker: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("broker.type: unknown type %q", cfg.Broker.Type)
	}
	switch cfg.Store.Type {
	case "memory":
		s = storememory.New(storememory.Options{PresenceTTL: presenceTTL(cfg)})
	case "postgres":
		if s, err = storepostgres.Open(ctx, cfg.Store, presenceTTL(cfg)); err != nil {
			_ = b.Close()
			return nil, nil, fmt.Errorf("store: %w", err)
		}
	default:
		_ = b.Close()
		return nil, nil, fmt.Errorf("store.type: unknown type %q", cfg.Store.Type)
	}
	return b, s, nil
}

// presenceTTL outlives a few ping intervals (sessions refresh presence on every ping).
func presenceTTL(cfg config.Config) time.Duration {
	ping := cfg.HTTP.PingInterval.D()
	if ping <= 0 {
		ping = session.DefaultPingInterval
	}
	return max(60*time.Second, 3*ping)
}

// Options tune Run.
type Options struct {
	Backends Backends
	// Listener, when set, is used instead of listening on cfg.HTTP.Address.
	Listener net.Listener
	// AdminListener, when set, is used instead of listening on cfg.HTTP.AdminAddress.
	AdminListener net.Listener
	// Ready is called with the public and the admin listening addresses once
	// the server accepts on both.
	Ready func(public, admin string)
	// Extra, when set, adds routes to the public listener (mounted after the
	// built-in ones).
	Extra func(mux *http.ServeMux)
	// OnNode, when set, is called with the node before the server accepts (tests).
	OnNode func(n *node.Node, ws *transport.Handler)
}

// Run serves until ctx ends, then shuts down gracefully within
// cfg.HTTP.ShutdownGracePeriod: stop accepting, disconnect clients with a
// reconnect code spread over half the grace period, close the backends.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) error {
	if opts.Backends == nil {
		opts.Backends = DefaultBackends
	}
	apiKeys := func() []string { return nil }
	if env := os.Getenv("PARLEY_API_KEY"); env != "" {
		apiKeys = func() []string { return []string{env} }
	} else if paths := cfg.HTTP.APIKeyPaths(); len(paths) > 0 {
		f, err := newKeyFiles(paths)
		if err != nil {
			key := "http.apiKeyFile"
			if len(cfg.HTTP.APIKeyFiles) > 0 {
				key = "http.apiKeyFiles[0]"
			}
			return fmt.Errorf("%s: %w", key, err)
		}
		apiKeys = f.Keys
	}
	var tlsConfig *tls.Config
	if cfg.HTTP.TLS != nil {
		r, err := newCertReloader(cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("http.tls: %w", err)
		}
		// h2 first: HTTP-streaming and SSE share one connection per client
		// over HTTP/2; WebSocket clients ask for http/1.1 and still get it.
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
	}

	nodeID := node.NewID()
	b, s, err := opts.Backends(ctx, cfg, nodeID, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.Close(); err != nil {
			log.Warn("close broker", "error", err)
		}
		if err := s.Close(); err != nil {
			log.Warn("close store", "error", err)
		}
	}()
	// A store that indexes messages must know the language it indexes
	// them in, or every inbox update would fail: refuse to start instead.
	if c, ok := s.(interface {
		CheckSearchLanguage(context.Context, string) error
	}); ok {
		if err := c.CheckSearchLanguage(ctx, cfg.Groups.Language()); err != nil {
			return fmt.Errorf("groups.searchLanguage: %w", err)
		}
	}
	n, err := node.New(cfg, b, s, log, node.WithID(nodeID))
	if err != nil {
		return err
	}
	runCtx, stopNode := context.WithCancel(context.Background())
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.Run(runCtx) }()
	defer func() {
		stopNode()
		<-nodeDone
	}()

	ws := transport.NewHandler(n)
	api := httpapi.New(n, apiKeys)
	public := http.NewServeMux()
	public.Handle(transport.Path, ws)
	if cfg.HTTP.HTTPStreamEnabled() {
		public.HandleFunc(transport.HTTPStreamPath, ws.ServeHTTPStream)
	}
	if cfg.HTTP.SSEEnabled() {
		public.HandleFunc(transport.SSEPath, ws.ServeSSE)
	}
	if cfg.HTTP.HTTPStreamEnabled() || cfg.HTTP.SSEEnabled() {
		public.HandleFunc(transport.EmulationPath, ws.ServeEmulation)
	}
	api.RegisterPublic(public)
	if cfg.Web.Enabled {
		public.Handle("/", web.Handler()) // the embedded chat page; specific routes above still win
	}
	if opts.Extra != nil {
		opts.Extra(public)
	}
	admin := http.NewServeMux()
	api.RegisterAdmin(admin)
	if opts.OnNode != nil {
		opts.OnNode(n, ws)
	}

	ln, err := listen(opts.Listener, "http.address", cfg.HTTP.Address, tlsConfig)
	if err != nil {
		if opts.AdminListener != nil {
			_ = opts.AdminListener.Close()
		}
		return err
	}
	adminLn, err := listen(opts.AdminListener, "http.adminAddress", cfg.HTTP.AdminAddress, tlsConfig)
	if err != nil {
		_ = ln.Close()
		return err
	}
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	srv := &http.Server{Handler: public, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog}
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog}
	serveErr := make(chan error, 2)
	go func() { serveErr <- wrapServe("public listener", srv.Serve(ln)) }()
	go func() { serveErr <- wrapServe("admin listener", adminSrv.Serve(adminLn)) }()
	wsScheme, httpScheme := "ws", "http"
	if tlsConfig != nil {
		wsScheme, httpScheme = "wss", "https"
	}
	log.Info("chat server listening", "address", ln.Addr().String(),
		"websocket", wsScheme+"://"+ln.Addr().String()+transport.Path,
		"adminAddress", adminLn.Addr().String(), "admin", httpScheme+"://"+adminLn.Addr().String(),
		"broker", cfg.Broker.Type, "store", cfg.Store.Type, "node", n.ID())
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String(), adminLn.Addr().String())
	}

	select {
	case err := <-serveErr:
		_ = srv.Close()
		_ = adminSrv.Close()
		return err
	case err := <-nodeDone:
		nodeDone <- err // for the deferred wait
		_ = srv.Close()
		_ = adminSrv.Close()
		return fmt.Errorf("broker stopped: %w", err)
	case <-ctx.Done():
	}

	grace := cfg.HTTP.ShutdownGracePeriod.D()
	log.Info("shutting down", "grace", grace.String(), "connections", ws.NumConns())
	n.SetShuttingDown()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// The admin listener drains beside the clients, not before them: an API
	// call or a scrape in flight finishes, and neither waits for the other.
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		shutdownHTTP(shutdownCtx, adminSrv, "admin", log)
	}()
	// The connections drain beside the public listener too: streaming
	// responses are requests in flight, which the listener's Shutdown would
	// otherwise wait for until the grace period ends.
	connsDone := make(chan struct{})
	go func() {
		defer close(connsDone)
		spread := min(grace/2, 10*time.Second)
		if err := ws.Shutdown(shutdownCtx, spread); err != nil {
			log.Warn("connections still open at the end of the grace period were closed", "error", err)
		}
	}()
	shutdownHTTP(shutdownCtx, srv, "public", log)
	<-connsDone
	<-adminDone
	log.Info("shutdown complete")
	return nil
}

// listen returns given, or a new listener on address (key names the config
// key in errors), wrapped in TLS when tlsConfig is set.
func listen(given net.Listener, key, address string, tlsConfig *tls.Config) (net.Listener, error) {
	ln := given
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", address); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	return ln, nil
}

func wrapServe(what string, err error) error { return fmt.Errorf("serve %s: %w", what, err) }

// shutdownHTTP stops accepting and waits for requests in flight until ctx
// ends, then closes what is left: the grace period bounds the whole shutdown.
func shutdownHTTP(ctx context.Context, srv *http.Server, name string, log *slog.Logger) {
	if err := srv.Shutdown(ctx); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("http shutdown", "listener", name, "error", err)
		}
		_ = srv.Close()
	}
}
