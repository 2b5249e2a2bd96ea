// Package server assembles a chat server from its config: broker and store,
// node, WebSocket transport, HTTP API, TLS; and runs it until its context ends,
// then drains gracefully. cmd/chatserver is a thin main around Run.
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
	// Ready is called with the listening address once the server accepts.
	Ready func(addr string)
	// Extra, when set, adds routes (mounted after the built-in ones).
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
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
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
	mux := http.NewServeMux()
	mux.Handle(transport.Path, ws)
	httpapi.New(n, apiKeys).Register(mux)
	if cfg.Web.Enabled {
		mux.Handle("/", web.Handler()) // the embedded chat page; specific routes above still win
	}
	if opts.Extra != nil {
		opts.Extra(mux)
	}
	if opts.OnNode != nil {
		opts.OnNode(n, ws)
	}

	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.HTTP.Address); err != nil {
			return fmt.Errorf("http.address: %w", err)
		}
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	scheme := "ws"
	if tlsConfig != nil {
		scheme = "wss"
	}
	log.Info("chat server listening", "address", ln.Addr().String(), "websocket", scheme+"://"+ln.Addr().String()+transport.Path,
		"broker", cfg.Broker.Type, "store", cfg.Store.Type, "node", n.ID())
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case err := <-nodeDone:
		nodeDone <- err // for the deferred wait
		_ = srv.Close()
		return fmt.Errorf("broker stopped: %w", err)
	case <-ctx.Done():
	}

	grace := cfg.HTTP.ShutdownGracePeriod.D()
	log.Info("shutting down", "grace", grace.String(), "connections", ws.NumConns())
	n.SetShuttingDown()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("http shutdown", "error", err)
	}
	spread := min(grace/2, 10*time.Second)
	if err := ws.Shutdown(shutdownCtx, spread); err != nil {
		log.Warn("connections still open at the end of the grace period were closed", "error", err)
	}
	log.Info("shutdown complete")
	return nil
}
