package servertest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// sharedStore keeps a store open when one of the servers sharing it stops.
type sharedStore struct{ store.Store }

func (sharedStore) Close() error { return nil }

// Peers starts n servers as replicas of one cluster, in memory: their
// brokers share one memory network and they share one memory store, which
// is closed after the last of them stopped.
func Peers(t testing.TB, cfg config.Config, n int) []*Server {
	t.Helper()
	return PeersWithStore(t, cfg, n, storememory.New(storememory.Options{}))
}

// PeersWithStore is Peers sharing st (closed after the last server stopped).
func PeersWithStore(t testing.TB, cfg config.Config, n int, st store.Store) []*Server {
	t.Helper()
	t.Cleanup(func() { _ = st.Close() }) // registered first: runs after every server stopped
	network := brokermemory.NewNetwork()
	out := make([]*Server, n)
	for i := range out {
		out[i] = Start(t, cfg, network.NewBroker(), sharedStore{st})
	}
	return out
}

// RealPeers starts n servers as replicas of one cluster on the machine's
// RabbitMQ and PostgreSQL: fresh exchanges and a fresh database for the
// test (removed at its end), each replica with its own broker connection and
// connection pool, as in production.
func RealPeers(t testing.TB, cfg config.Config, n int) []*Server {
	t.Helper()
	top := testenv.NewTopology(t)
	db := testenv.NewDatabase(t, "parley_peers")
	cfg.Broker = config.Broker{Type: "amqp", Exchange: top.Exchange, ControlExchange: top.ControlExchange}
	cfg.Store.Type = "postgres"
	out := make([]*Server, n)
	for i := range out {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := postgres.New(ctx, db.URL, postgres.Options{MaxConns: 4, RetentionInterval: -1, OpTimeout: 3 * time.Second})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		b, err := amqp.New(amqp.Options{URL: testenv.AMQPURL(), Exchange: top.Exchange, ControlExchange: top.ControlExchange,
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			_ = st.Close()
			t.Fatal(err)
		}
		out[i] = Start(t, cfg, b, st) // Start closes them when the server stops
		waitReady(t, out[i])
	}
	return out
}

func waitReady(t testing.TB, s *Server) {
	t.Helper()
	deadline := time.Now().Add(3 * Timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.Node.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not ready: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
