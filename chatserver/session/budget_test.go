package session_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store/postgres"
)

// burst sends cmd count times (a fresh id each, frames of up to 100
// commands, each frame once the previous one is answered, so the server has
// read everything when it closes) and returns the answers by error code (0
// for a success) and the close code (0 while the connection is open).
func burst(t *testing.T, r *servertest.Raw, count int, cmd func() *protocol.Command) (map[uint32]int, int) {
	t.Helper()
	got := map[uint32]int{}
	for count > 0 {
		n := min(count, 100)
		count -= n
		cmds := make([]*protocol.Command, n)
		for i := range cmds {
			cmds[i] = cmd()
		}
		pending := map[uint32]bool{}
		for _, id := range r.Commands(t, cmds) {
			pending[id] = true
		}
		deadline := time.Now().Add(4 * servertest.Timeout)
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d commands unanswered", len(pending))
			}
			reps, err := r.Read(time.Until(deadline))
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return got, ce.Code
				}
				t.Fatalf("read: %v", err)
			}
			for _, rep := range reps {
				if !pending[rep.Id] {
					continue
				}
				delete(pending, rep.Id)
				code := uint32(0)
				if rep.Error != nil {
					code = rep.Error.Code
					if code == 111 && !rep.Error.Temporary {
						t.Fatal("111 must be temporary")
					}
				}
				got[code]++
			}
		}
	}
	return got, 0
}

func historyCmd() *protocol.Command {
	return &protocol.Command{History: &protocol.HistoryRequest{Channel: "open:budget", Limit: 1}}
}

// Every command costs budget units (history 1 + limit/100, subscribe 2, read
// 3, unread by its channels …); a connection over its budget gets 111
// "too many requests" (temporary) and the budget recovers at its rate.
func TestCommandBudgetRefusesAndRecovers(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.CommandCostPerSecond = 5 // burst: 10 s worth, 50 units
	cfg.Limits.UserCommandCostPerSecond = 0
	srv := servertest.Start(t, cfg, nil, nil)
	r := servertest.DialRaw(t, srv.WS, "json")
	r.Connect(t, servertest.Token(t, "alice"))

	got, closed := burst(t, r, 80, historyCmd)
	if closed != 0 {
		t.Fatalf("closed with %d", closed)
	}
	// 50 units of burst, plus what trickles back while the 80 are answered.
	if got[0] < 50 || got[0] > 60 || got[111] != 80-got[0] {
		t.Fatalf("answers %v: want about 50 served, the rest 111", got)
	}
	time.Sleep(time.Second) // 5 units back
	if got, _ := burst(t, r, 4, historyCmd); got[0] != 4 {
		t.Fatalf("after a second: %v, want the budget back", got)
	}
}

// A user's connections on a node share one budget: opening more
// connections does not multiply what a user may cost.
func TestUserBudgetSpansConnections(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.CommandCostPerSecond = 0
	cfg.Limits.UserCommandCostPerSecond = 3 // burst 30
	srv := servertest.Start(t, cfg, nil, nil)
	first := servertest.DialRaw(t, srv.WS, "json")
	first.Connect(t, servertest.Token(t, "alice"))
	second := servertest.DialRaw(t, srv.WS, "protobuf")
	second.Connect(t, servertest.Token(t, "alice"))
	other := servertest.DialRaw(t, srv.WS, "json")
	other.Connect(t, servertest.Token(t, "bob"))

	if got, _ := burst(t, first, 30, historyCmd); got[0] < 30 {
		t.Fatalf("first connection: %v", got)
	}
	if got, _ := burst(t, second, 5, historyCmd); got[111] < 4 {
		t.Fatalf("second connection of the same user: %v, want 111", got)
	}
	if got, _ := burst(t, other, 5, historyCmd); got[0] != 5 {
		t.Fatalf("another user: %v", got)
	}
}

// Reconnecting does not buy a user a fresh budget: it is kept until it has
// refilled.
func TestUserBudgetSurvivesReconnect(t *testing.T) {
	cfg := servertest.Config()
	cfg.Limits.CommandCostPerSecond = 0
	cfg.Limits.UserCommandCostPerSecond = 1 // burst 10
	srv := servertest.Start(t, cfg, nil, nil)
	first := servertest.DialRaw(t, srv.WS, "json")
	first.Connect(t, servertest.Token(t, "alice"))
	if got, _ := burst(t, first, 10, historyCmd); got[0] < 10 {
		t.Fatalf("within the budget: %v", got)
	}
	_ = first.Conn.Close()
	deadline := time.Now().Add(servertest.Timeout)
	for srv.Conns.NumConns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	again := servertest.DialRaw(t, srv.WS, "json")
	again.Connect(t, servertest.Token(t, "alice"))
	if got, _ := burst(t, again, 3, historyCmd); got[111] < 2 {
		t.Fatalf("after reconnecting: %v, want the spent budget still spent", got)
	}
}

// A client that keeps hammering past its budget (or its publish rate) is
// disconnected with 3013, a code the SDKs reconnect after, never with a
// terminal code; one that exceeds its publish rate now and then only gets 111.
func TestRepeatOffendersGetAReconnectableDisconnect(t *testing.T) {
	t.Run("command budget", func(t *testing.T) {
		cfg := servertest.Config()
		cfg.Limits.CommandCostPerSecond = 1
		srv := servertest.Start(t, cfg, nil, nil)
		r := servertest.DialRaw(t, srv.WS, "json")
		r.Connect(t, servertest.Token(t, "alice"))
		if _, closed := burst(t, r, 3000, historyCmd); closed != 3013 {
			t.Fatalf("closed with %d, want 3013", closed)
		}
	})
	t.Run("publish rate", func(t *testing.T) {
		cfg := servertest.Config()
		cfg.Limits.PublishesPerSecond = 20
		cfg.Limits.CommandCostPerSecond = 0
		srv := servertest.Start(t, cfg, nil, nil)
		r := servertest.DialRaw(t, srv.WS, "protobuf")
		r.Connect(t, servertest.Token(t, "alice"))
		publish := func() *protocol.Command {
			return &protocol.Command{Publish: &protocol.PublishRequest{Channel: "open:rate", Data: []byte(`{}`)}}
		}
		// Bursts past the rate, with pauses: 111s, never a disconnect,
		// however long the connection lives.
		for round := range 4 {
			got, closed := burst(t, r, 300, publish)
			if closed != 0 || got[111] == 0 {
				t.Fatalf("round %d: %v closed %d", round, got, closed)
			}
			time.Sleep(3 * time.Second)
		}
		if _, closed := burst(t, r, 3000, publish); closed != 3013 {
			t.Fatalf("a flood closed with %d, want 3013", closed)
		}
	})
}

// Errors the server's own dependencies cause (the store unreachable) never
// count against the client: a connection that lives through outages keeps
// its place. Real PostgreSQL behind a proxy that the test cuts.
func TestStoreOutagesDoNotCountAsClientErrors(t *testing.T) {
	db := testenv.NewDatabase(t, "parley_budget")
	host, err := testenv.Host(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpproxy.New(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	url, err := testenv.WithHost(db.URL, proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.New(c, url, postgres.Options{MaxConns: 4, RetentionInterval: -1, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := servertest.Config()
	cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond = 0, 0
	srv := servertest.StartWithLogger(t, cfg, nil, st, slog.New(slog.DiscardHandler)) // 1200 logged failures
	r := servertest.DialRaw(t, srv.WS, "json")
	r.Connect(t, servertest.Token(t, "alice"))

	proxy.Disable()
	got, closed := burst(t, r, 1200, historyCmd)
	if closed != 0 || got[100] != 1200 {
		t.Fatalf("during the outage: %v, closed %d: want 1200 × error 100 and the connection open", got, closed)
	}
	proxy.Enable()
	deadline := time.Now().Add(servertest.Timeout)
	for {
		got, closed := burst(t, r, 1, historyCmd)
		if closed != 0 {
			t.Fatalf("closed %d", closed)
		}
		if got[0] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store back but history answers %v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
