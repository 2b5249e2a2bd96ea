package session_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), servertest.Timeout)
	t.Cleanup(cancel)
	return c
}

// joinOf waits for a join push from user, skipping others (a subscriber also
// sees its own join).
func joinOf(t *testing.T, s *servertest.Sub, user string) centrifuge.JoinEvent {
	t.Helper()
	for {
		j := servertest.Recv(t, s.Joins, "join of "+user)
		if j.User == user {
			return j
		}
	}
}

func serverErr(t *testing.T, err error) *centrifuge.Error {
	t.Helper()
	var e *centrifuge.Error
	if !errors.As(err, &e) {
		t.Fatalf("want a protocol error, got %v", err)
	}
	return e
}

// Publish, publication push, join and leave pushes, for both wire formats
// and across them (a JSON publisher, a protobuf subscriber and back).
func TestPublishSubscribeBothProtocols(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, pubProto := range servertest.Protocols {
		for _, subProto := range servertest.Protocols {
			t.Run(pubProto+"→"+subProto, func(t *testing.T) {
				channel := "room:" + pubProto + "-" + subProto
				bob := servertest.Connect(t, srv.WS, subProto, servertest.Token(t, "bob"))
				bobSub := servertest.Subscribe(t, bob, channel, centrifuge.SubscriptionConfig{JoinLeave: true})
				alice := servertest.Connect(t, srv.WS, pubProto, servertest.Token(t, "alice"))
				aliceSub := servertest.Subscribe(t, alice, channel, centrifuge.SubscriptionConfig{})
				joinOf(t, bobSub, "alice")
				if _, err := aliceSub.Publish(ctx(t), []byte(`{"text":"hello"}`)); err != nil {
					t.Fatal(err)
				}
				pub := servertest.Recv(t, bobSub.Pubs, "publication")
				if string(pub.Data) != `{"text":"hello"}` || pub.Info == nil || pub.Info.User != "alice" || pub.Offset != 1 {
					t.Fatalf("got %+v (info %+v)", pub, pub.Info)
				}
				if err := aliceSub.Unsubscribe(); err != nil {
					t.Fatal(err)
				}
				leave := servertest.Recv(t, bobSub.Leaves, "leave")
				if leave.User != "alice" {
					t.Fatalf("leave from %q", leave.User)
				}
			})
		}
	}
}

func TestHistoryLimitSinceReverse(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			channel := "room:history-" + proto
			c := servertest.Connect(t, srv.WS, proto, servertest.Token(t, "alice"))
			sub := servertest.Subscribe(t, c, channel, centrifuge.SubscriptionConfig{})
			for i := 1; i <= 5; i++ {
				if _, err := sub.Publish(ctx(t), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
					t.Fatal(err)
				}
			}
			all, err := sub.History(ctx(t), centrifuge.WithHistoryLimit(-1))
			if err != nil {
				t.Fatal(err)
			}
			if len(all.Publications) != 5 || all.Offset != 5 || all.Epoch == "" {
				t.Fatalf("history: %d pubs, offset %d epoch %q", len(all.Publications), all.Offset, all.Epoch)
			}
			two, err := sub.History(ctx(t), centrifuge.WithHistoryLimit(2))
			if err != nil {
				t.Fatal(err)
			}
			if len(two.Publications) != 2 || two.Publications[0].Offset != 1 {
				t.Fatalf("limit 2: %+v", two.Publications)
			}
			since, err := sub.History(ctx(t), centrifuge.WithHistoryLimit(10),
				centrifuge.WithHistorySince(&centrifuge.StreamPosition{Offset: 3, Epoch: all.Epoch}))
			if err != nil {
				t.Fatal(err)
			}
			if len(since.Publications) != 2 || since.Publications[0].Offset != 4 || string(since.Publications[1].Data) != `{"n":5}` {
				t.Fatalf("since 3: %+v", since.Publications)
			}
			rev, err := sub.History(ctx(t), centrifuge.WithHistoryLimit(2), centrifuge.WithHistoryReverse(true))
			if err != nil {
				t.Fatal(err)
			}
			if len(rev.Publications) != 2 || rev.Publications[0].Offset != 5 || rev.Publications[1].Offset != 4 {
				t.Fatalf("reverse: %+v", rev.Publications)
			}
			_, err = sub.History(ctx(t), centrifuge.WithHistoryLimit(10),
				centrifuge.WithHistorySince(&centrifuge.StreamPosition{Offset: 1, Epoch: "not-the-epoch"}))
			if e := serverErr(t, err); e.Code != 112 {
				t.Fatalf("wrong epoch: got %v, want 112", e)
			}
			// No history in a namespace without it.
			plain := servertest.Subscribe(t, c, "plain:x-"+proto, centrifuge.SubscriptionConfig{})
			_, err = plain.History(ctx(t), centrifuge.WithHistoryLimit(1))
			if e := serverErr(t, err); e.Code != 108 {
				t.Fatalf("plain history: %v, want 108 not available", e)
			}
		})
	}
}

func TestPresenceIsUserLevel(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	channel := "room:presence"
	watcher := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "watcher"))
	wsub := servertest.Subscribe(t, watcher, channel, centrifuge.SubscriptionConfig{JoinLeave: true})
	// alice opens two tabs: one join, then no second one.
	tab1 := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	servertest.Subscribe(t, tab1, channel, centrifuge.SubscriptionConfig{})
	joinOf(t, wsub, "alice")
	tab2 := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "alice"))
	sub2 := servertest.Subscribe(t, tab2, channel, centrifuge.SubscriptionConfig{})
	servertest.None(t, wsub.Joins, 200*time.Millisecond, "second join for the same user")

	p, err := wsub.Presence(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Clients) != 3 {
		t.Fatalf("presence: %d clients, want 3", len(p.Clients))
	}
	stats, err := wsub.PresenceStats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if stats.NumClients != 3 || stats.NumUsers != 2 {
		t.Fatalf("stats %+v, want 3 clients 2 users", stats)
	}
	// Closing one tab is not a leave; closing the last is.
	if err := sub2.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	servertest.None(t, wsub.Leaves, 200*time.Millisecond, "leave while another tab stays")
	tab1.Close()
	if l := servertest.Recv(t, wsub.Leaves, "leave"); l.User != "alice" {
		t.Fatalf("leave %+v", l)
	}
	// Presence needs the namespace to enable it.
	plain := servertest.Subscribe(t, watcher, "plain:p", centrifuge.SubscriptionConfig{})
	if _, err := plain.Presence(ctx(t)); serverErr(t, err).Code != 108 {
		t.Fatalf("plain presence: %v", err)
	}
}
