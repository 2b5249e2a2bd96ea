package session_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// tryConnect connects user and returns 0 once connected, or the disconnect
// code the server refused the connection with.
func tryConnect(t *testing.T, url, proto, user string) (*centrifuge.Client, uint32) {
	t.Helper()
	c := servertest.NewClient(t, url, proto, centrifuge.Config{Token: servertest.Token(t, user)})
	connected := make(chan struct{}, 1)
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
	c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
		return c, 0
	case e := <-disconnected:
		return c, e.Code
	case <-time.After(servertest.Timeout):
		t.Fatal("timeout connecting")
	}
	return nil, 0
}

func wantRefused(t *testing.T, url, proto, user, what string) {
	t.Helper()
	if _, code := tryConnect(t, url, proto, user); code != 3504 {
		t.Fatalf("%s: code %d, want 3504 connection limit", what, code)
	}
}

// limits.connectionsPerUser counts a user's connections on every replica
// sharing the store, not per replica: real RabbitMQ and PostgreSQL.
func TestConnectionsPerUserAcrossReplicas(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 2
	peers := servertest.RealPeers(t, cfg, 2)
	a, b := peers[0].WS, peers[1].WS
	servertest.Connect(t, a, "json", servertest.Token(t, "alice"))
	onB := servertest.Connect(t, b, "protobuf", servertest.Token(t, "alice"))
	wantRefused(t, a, "json", "alice", "third connection, on A")
	wantRefused(t, b, "protobuf", "alice", "third connection, on B")
	servertest.Connect(t, a, "json", servertest.Token(t, "bob")) // others are not affected

	// Closing a connection on B frees a place on A.
	onB.Close()
	deadline := time.Now().Add(servertest.Timeout)
	for {
		c, code := tryConnect(t, a, "json", "alice")
		if code == 0 {
			break
		}
		c.Close()
		if code != 3504 || time.Now().After(deadline) {
			t.Fatalf("after closing a connection: code %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantRefused(t, b, "json", "alice", "again at the limit")
}

// Counted connections stay counted past the store's presence TTL: every ping
// refreshes them. A replica that dies without releasing its connections
// blocks nobody for longer than the TTL.
func TestConnectionsPerUserRefreshedByPings(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 1
	cfg.HTTP.PingInterval = config.Duration(100 * time.Millisecond)
	cfg.HTTP.PongTimeout = config.Duration(80 * time.Millisecond)
	const ttl = 300 * time.Millisecond
	st := storememory.New(storememory.Options{PresenceTTL: ttl})
	peers := servertest.PeersWithStore(t, cfg, 2, st)
	servertest.Connect(t, peers[0].WS, "json", servertest.Token(t, "alice"))
	time.Sleep(4 * ttl)
	wantRefused(t, peers[1].WS, "protobuf", "alice", "second connection after several TTLs")

	// An entry nobody refreshes (its replica died) expires.
	ctx, cancel := context.WithTimeout(context.Background(), servertest.Timeout)
	defer cancel()
	if err := st.AddPresence(ctx, "$conns:ghost", message.ClientInfo{User: "ghost", Client: "dead-replica"}); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, peers[1].WS, "json", "ghost", "while the dead replica's entry lives")
	time.Sleep(ttl + 50*time.Millisecond)
	servertest.Connect(t, peers[1].WS, "json", servertest.Token(t, "ghost"))
}

// connsDown is a store whose connection counting fails (the presence calls
// for "$conns:" channels), as when the database is unreachable.
type connsDown struct{ store.Store }

func (s connsDown) AddPresence(ctx context.Context, ch string, e message.ClientInfo) error {
	if strings.HasPrefix(ch, "$conns:") {
		return fmt.Errorf("%w: test", store.ErrUnavailable)
	}
	return s.Store.AddPresence(ctx, ch, e)
}

func (s connsDown) AddPresences(ctx context.Context, entries []store.PresenceEntry) error {
	for _, e := range entries {
		if strings.HasPrefix(e.Channel, "$conns:") {
			return fmt.Errorf("%w: test", store.ErrUnavailable)
		}
	}
	return s.Store.AddPresences(ctx, entries)
}

func (s connsDown) PresenceStats(ctx context.Context, ch string) (int, int, error) {
	if strings.HasPrefix(ch, "$conns:") {
		return 0, 0, fmt.Errorf("%w: test", store.ErrUnavailable)
	}
	return s.Store.PresenceStats(ctx, ch)
}

// Without the store the limit still holds per replica (the fast path, which
// runs before the store is asked), and connecting does not fail.
func TestConnectionsPerUserWithoutTheStore(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.ConnectionsPerUser = 1
	srv := servertest.Start(t, cfg, nil, connsDown{storememory.New(storememory.Options{})})
	c := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	wantRefused(t, srv.WS, "protobuf", "alice", "second connection on the same replica")
	// The rest of presence works.
	s := servertest.Subscribe(t, c, "room:p", centrifuge.SubscriptionConfig{})
	if p, err := s.Presence(ctx(t)); err != nil || len(p.Clients) != 1 {
		t.Fatalf("presence %+v %v", p, err)
	}
}
