package session_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// readEvent waits for the next read event on s, skipping chat messages.
func readEvent(t *testing.T, s *servertest.Sub) []message.Receipt {
	t.Helper()
	for {
		p := servertest.Recv(t, s.Pubs, "read event")
		if p.Tags["type"] != "read" {
			continue
		}
		if p.Offset != 0 || p.Info != nil {
			t.Fatalf("read event %+v: want offset 0 and no client info (never stored, sent by the server)", p)
		}
		var ev node.ReadEvent
		if err := json.Unmarshal(p.Data, &ev); err != nil {
			t.Fatalf("read event data %q: %v", p.Data, err)
		}
		slices.SortFunc(ev.Reads, func(a, b message.Receipt) int {
			if a.User < b.User {
				return -1
			}
			return 1
		})
		return ev.Reads
	}
}

func receipts(t *testing.T, c *centrifuge.Client, channel string, limit int) []message.Receipt {
	t.Helper()
	res, err := rpc(t, c, "receipts", map[string]any{"channel": channel, "limit": limit})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(res["receipts"])
	var out []message.Receipt
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Room members see how far the others have read: a "read" rpc is broadcast
// to the channel as a read event (offset 0, never stored; receipts that follow
// within node.ReceiptInterval are merged into one event), and the "receipts"
// rpc lists everyone's last-read offset from the store.
func TestReadReceiptsSeenByOthers(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const room = "room:seen"
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	bob := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))
	carol := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "carol"))
	as := servertest.Subscribe(t, alice, room, centrifuge.SubscriptionConfig{})
	servertest.Subscribe(t, bob, room, centrifuge.SubscriptionConfig{})
	servertest.Subscribe(t, carol, room, centrifuge.SubscriptionConfig{})
	for i := 0; i < 3; i++ {
		if _, err := as.Publish(ctx(t), []byte(`{"text":"hi"}`)); err != nil {
			t.Fatal(err)
		}
	}

	res, err := rpc(t, bob, "read", map[string]any{"channel": room, "offset": 2})
	if err != nil || res["last_read"] != float64(2) {
		t.Fatalf("read: %v %v", res, err)
	}
	if got := readEvent(t, as); !slices.Equal(got, []message.Receipt{{User: "bob", LastRead: 2}}) {
		t.Fatalf("alice sees %+v, want bob at 2 at once", got)
	}

	// Within the interval: bob moves on (past the top: clamped), carol reads
	// too, bob's old offset comes late (never moves back). They are merged
	// into one event (node's unit test proves the merge without timing; here
	// a slow machine may split them, never show bob going back).
	for _, r := range []struct {
		c      *centrifuge.Client
		offset int
	}{{bob, 99}, {carol, 3}, {bob, 1}} {
		if _, err := rpc(t, r.c, "read", map[string]any{"channel": room, "offset": r.offset}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]uint64{}
	for events := 0; len(seen) < 2; events++ {
		if events == 3 {
			t.Fatalf("three read events and still not bob and carol at 3: %v", seen)
		}
		for _, r := range readEvent(t, as) {
			if r.LastRead != 3 {
				t.Fatalf("alice sees %+v, want everyone at 3", r)
			}
			seen[r.User] = r.LastRead
		}
	}

	// The same through send (fire and forget), from alice herself.
	if err := alice.Send(ctx(t), []byte(`{"method":"read","data":{"channel":"room:seen","offset":1}}`)); err != nil {
		t.Fatal(err)
	}
	if got := readEvent(t, as); !slices.Equal(got, []message.Receipt{{User: "alice", LastRead: 1}}) {
		t.Fatalf("alice sees %+v, want her own receipt at 1", got)
	}

	want := []message.Receipt{{User: "bob", LastRead: 3}, {User: "carol", LastRead: 3}, {User: "alice", LastRead: 1}}
	if got := receipts(t, alice, room, 0); !slices.Equal(got, want) {
		t.Fatalf("receipts %+v, want %+v", got, want)
	}
	if got := receipts(t, carol, room, 2); !slices.Equal(got, want[:2]) {
		t.Fatalf("receipts limit 2: %+v", got)
	}
	h, err := as.History(ctx(t), centrifuge.WithHistoryLimit(-1))
	if err != nil || len(h.Publications) != 3 {
		t.Fatalf("read events must not be stored: %d publications, %v", len(h.Publications), err)
	}
}

func TestReadReceiptsPermissions(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	mallory := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "mallory"))
	const dm = "dm:#alice,bob"
	ds := servertest.Subscribe(t, alice, dm, centrifuge.SubscriptionConfig{})
	if _, err := ds.Publish(ctx(t), []byte(`{"text":"psst"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc(t, alice, "read", map[string]any{"channel": dm, "offset": 1}); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"read", "receipts"} {
		if _, err := rpc(t, mallory, method, map[string]any{"channel": dm, "offset": 1}); serverErr(t, err).Code != 103 {
			t.Fatalf("%s in someone else's DM: %v, want 103", method, err)
		}
	}
	if got := receipts(t, alice, dm, 10); !slices.Equal(got, []message.Receipt{{User: "alice", LastRead: 1}}) {
		t.Fatalf("mallory's attempt changed the receipts: %+v", got)
	}
	// A namespace without history: subscribers only.
	if _, err := rpc(t, mallory, "receipts", map[string]any{"channel": "plain:x"}); serverErr(t, err).Code != 103 {
		t.Fatalf("receipts of a history-less channel without subscribing: %v", err)
	}
	servertest.Subscribe(t, mallory, "plain:x", centrifuge.SubscriptionConfig{})
	if got := receipts(t, mallory, "plain:x", 0); len(got) != 0 {
		t.Fatalf("receipts of a fresh channel: %+v", got)
	}
	for _, params := range []map[string]any{{}, {"channel": "room:x", "limit": -1}, {"channel": "room:x", "limit": node.MaxReceipts + 1}} {
		if _, err := rpc(t, alice, "receipts", params); serverErr(t, err).Code != 107 {
			t.Fatalf("receipts %v: %v, want 107 bad request", params, err)
		}
	}
	if _, err := rpc(t, alice, "receipts", map[string]any{"channel": "nowhere:x"}); serverErr(t, err).Code != 102 {
		t.Fatalf("receipts of an unknown namespace: %v", err)
	}
}

// A receipt given on one replica reaches members on another, through the
// real RabbitMQ and PostgreSQL.
func TestReadReceiptsAcrossReplicas(t *testing.T) {
	peers := servertest.RealPeers(t, servertest.Config(), 2)
	const room = "room:replicas"
	alice := servertest.Connect(t, peers[0].WS, "json", servertest.Token(t, "alice"))
	bob := servertest.Connect(t, peers[1].WS, "protobuf", servertest.Token(t, "bob"))
	as := servertest.Subscribe(t, alice, room, centrifuge.SubscriptionConfig{})
	servertest.Subscribe(t, bob, room, centrifuge.SubscriptionConfig{})
	if _, err := as.Publish(ctx(t), []byte(`{"text":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc(t, bob, "read", map[string]any{"channel": room, "offset": 1}); err != nil {
		t.Fatal(err)
	}
	if got := readEvent(t, as); !slices.Equal(got, []message.Receipt{{User: "bob", LastRead: 1}}) {
		t.Fatalf("alice on the other replica sees %+v", got)
	}
	if got := receipts(t, alice, room, 0); !slices.Equal(got, []message.Receipt{{User: "bob", LastRead: 1}}) {
		t.Fatalf("receipts on the other replica: %+v", got)
	}
}
