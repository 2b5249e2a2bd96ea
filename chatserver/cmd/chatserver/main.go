// Command chatserver runs the Parley chat server: flags → config → server.Run.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/server"
	"github.com/parley-chat/parley/chatserver/version"
)

func main() {
	configPath := flag.String("config", "", "path to the JSON config file (the operator's ConfigMap)")
	dev := flag.Bool("dev", false, "run a single development node: in-memory broker and store, anonymous access, a printed token")
	address := flag.String("address", "", "public listen address (WebSocket, web page), overrides http.address")
	adminAddress := flag.String("admin-address", "", "admin listen address (HTTP API, metrics), overrides http.adminAddress")
	logLevel := flag.String("log-level", "", "debug, info, warn or error; overrides log.level")
	debugAddress := flag.String("debug-address", "", "serve net/http/pprof at /debug/pprof/ on this separate address (e.g. 127.0.0.1:6060); off by default")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("chatserver", version.String())
		return
	}
	if *debugAddress != "" {
		if err := serveDebug(*debugAddress); err != nil {
			fmt.Fprintln(os.Stderr, "chatserver: --debug-address:", err)
			os.Exit(1)
		}
	}
	if err := run(*configPath, *dev, *address, *adminAddress, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "chatserver:", err)
		os.Exit(1)
	}
}

func run(configPath string, dev bool, address, adminAddress, logLevel string) error {
	var (
		cfg config.Config
		d   *server.Dev
		err error
	)
	switch {
	case dev:
		addr, adminAddr := address, adminAddress
		if addr == "" {
			addr = "127.0.0.1:8000"
		}
		if adminAddr == "" {
			adminAddr = "127.0.0.1:8001"
		}
		if d, err = server.NewDev(addr, adminAddr); err != nil {
			return err
		}
		defer d.Cleanup()
		cfg = d.Config
	case configPath != "":
		if cfg, err = config.Load(configPath); err != nil {
			return err
		}
	default:
		return fmt.Errorf("give --config <file> or --dev")
	}
	if address != "" {
		cfg.HTTP.Address = address
	}
	if adminAddress != "" {
		cfg.HTTP.AdminAddress = adminAddress
	}
	if logLevel != "" {
		cfg.Log.Level = logLevel
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	log.Info("starting chat server", "version", version.Version, "commit", version.Commit)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	opts := server.Options{}
	if d != nil {
		opts.Ready = func(addr, admin string) {
			fmt.Printf(`
Parley dev server (single node, in-memory broker and store)
Public (clients):
  WebSocket:  ws://%[1]s/connection/websocket   (JSON; protobuf with subprotocol "centrifuge-protobuf")
  Web chat:   http://%[1]s/?room=lobby#token=%[3]s
  CLI:        PARLEY_URL=http://%[1]s PARLEY_TOKEN=<token> parley chat lobby
  Anonymous:  allowed in "room:*" (connect without a token)
  Token:      %[3]s   (user "dev", 24h)
Admin (operators; keep it private):
  HTTP API:   http://%[2]s/api/   API key: %[4]s
  Try:        curl -s -X POST -H 'X-API-Key: %[4]s' -d '{"channel":"room:lobby","data":{"text":"hi"}}' http://%[2]s/api/publish
  Metrics:    http://%[2]s/metrics   Ready: http://%[2]s/readyz   Health: http://%[1]s/healthz

`, addr, admin, d.Token, d.APIKey())
		}
	}
	return server.Run(ctx, cfg, log, opts)
}

// serveDebug serves the Go profiler on its own listener, never on the public
// one: profiles reveal internals and cost CPU, so only an operator (or
// chatbench) who asks for it gets it, on an address they choose.
func serveDebug(address string) error {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln) }()
	return nil
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	hopts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, hopts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, hopts))
}
