package session_test

import (
	"testing"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// refused subscribes and returns the refusal code (0 if it succeeded).
func refused(t *testing.T, c *centrifuge.Client, channel string, cfg centrifuge.SubscriptionConfig) uint32 {
	t.Helper()
	s := servertest.NewSub(t, c, channel, cfg)
	if err := s.Subscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-s.Unsubscribed:
		_ = c.RemoveSubscription(s.Subscription)
		return e.Code
	case <-s.Subscribed:
		_ = s.Unsubscribe()
		_ = c.RemoveSubscription(s.Subscription)
		return 0
	case <-ctx(t).Done():
		t.Fatal("timeout")
	}
	return 0
}

func TestNamespacePermissions(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	bob := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))

	t.Run("unknown namespace", func(t *testing.T) {
		if code := refused(t, alice, "nope:1", centrifuge.SubscriptionConfig{}); code != 102 {
			t.Fatalf("got %d, want 102", code)
		}
	})
	t.Run("room: publish only when subscribed", func(t *testing.T) {
		if _, err := alice.Publish(ctx(t), "room:perm", []byte(`{}`)); serverErr(t, err).Code != 103 {
			t.Fatalf("unsubscribed publish: %v", err)
		}
		servertest.Subscribe(t, alice, "room:perm", centrifuge.SubscriptionConfig{})
		if _, err := alice.Publish(ctx(t), "room:perm", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		// history and presence need a subscription in room too
		if _, err := bob.History(ctx(t), "room:perm"); serverErr(t, err).Code != 103 {
			t.Fatalf("history without subscription: %v", err)
		}
		if _, err := bob.Presence(ctx(t), "room:perm"); serverErr(t, err).Code != 103 {
			t.Fatalf("presence without subscription: %v", err)
		}
	})
	t.Run("open: any authenticated user publishes and reads", func(t *testing.T) {
		if _, err := bob.Publish(ctx(t), "open:x", []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		h, err := bob.History(ctx(t), "open:x", centrifuge.WithHistoryLimit(10))
		if err != nil || len(h.Publications) != 1 {
			t.Fatalf("history %+v %v", h, err)
		}
		if _, err := alice.PresenceStats(ctx(t), "open:x"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("news: nobody publishes from a client", func(t *testing.T) {
		servertest.Subscribe(t, alice, "news:1", centrifuge.SubscriptionConfig{})
		if _, err := alice.Publish(ctx(t), "news:1", []byte(`{}`)); serverErr(t, err).Code != 103 {
			t.Fatalf("publish in news: %v", err)
		}
	})
	t.Run("secret: needs a grant or a subscription token", func(t *testing.T) {
		if code := refused(t, alice, "secret:plans", centrifuge.SubscriptionConfig{}); code != 103 {
			t.Fatalf("no token: %d, want 103", code)
		}
		if code := refused(t, alice, "secret:plans", centrifuge.SubscriptionConfig{Token: servertest.SubToken(t, "alice", "secret:plans")}); code != 0 {
			t.Fatalf("with subscription token: refused %d", code)
		}
		if code := refused(t, bob, "secret:plans", centrifuge.SubscriptionConfig{Token: servertest.SubToken(t, "alice", "secret:plans")}); code != 103 {
			t.Fatalf("someone else's subscription token: %d, want 103", code)
		}
		if code := refused(t, bob, "secret:other", centrifuge.SubscriptionConfig{Token: servertest.SubToken(t, "bob", "secret:plans")}); code != 103 {
			t.Fatalf("token for another channel: %d, want 103", code)
		}
		claims := servertest.TokenClaims("carol", 3600e9)
		claims.Channels = []string{"secret:*"}
		carol := servertest.Connect(t, srv.WS, "json", servertest.Sign(t, claims, servertest.Secret))
		if code := refused(t, carol, "secret:anything", centrifuge.SubscriptionConfig{}); code != 0 {
			t.Fatalf("with a namespace grant: refused %d", code)
		}
	})
}

func TestUserLimitedChannels(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	bob := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))
	eve := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "eve"))
	const dm = "dm:#alice,bob"
	as := servertest.Subscribe(t, alice, dm, centrifuge.SubscriptionConfig{})
	bs := servertest.Subscribe(t, bob, dm, centrifuge.SubscriptionConfig{})
	if code := refused(t, eve, dm, centrifuge.SubscriptionConfig{}); code != 103 {
		t.Fatalf("eve subscribing to alice and bob's channel: %d, want 103", code)
	}
	if _, err := eve.Publish(ctx(t), dm, []byte(`{}`)); serverErr(t, err).Code != 103 {
		t.Fatalf("eve publishing: %v", err)
	}
	if _, err := eve.History(ctx(t), dm); serverErr(t, err).Code != 103 {
		t.Fatalf("eve reading history: %v", err)
	}
	if _, err := as.Publish(ctx(t), []byte(`{"text":"hi bob"}`)); err != nil {
		t.Fatal(err)
	}
	if p := servertest.Recv(t, bs.Pubs, "dm"); string(p.Data) != `{"text":"hi bob"}` {
		t.Fatalf("got %s", p.Data)
	}
}

// Every connection is subscribed by the server to its user's personal
// channel, and a publication there (from the HTTP API) reaches all of them.
func TestPersonalChannel(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	pubs := make(chan centrifuge.ServerPublicationEvent, 4)
	subscribed := make(chan centrifuge.ServerSubscribedEvent, 4)
	c := servertest.NewClient(t, srv.WS, "protobuf", centrifuge.Config{Token: servertest.Token(t, "alice")})
	c.OnPublication(func(e centrifuge.ServerPublicationEvent) { servertest.Send(pubs, e) })
	c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { servertest.Send(subscribed, e) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	if e := servertest.Recv(t, subscribed, "server-side subscription"); e.Channel != "personal:#alice" {
		t.Fatalf("subscribed to %q", e.Channel)
	}
	if _, err := srv.Node.Publish(ctx(t), "personal:#alice", []byte(`{"note":"for alice"}`), nil, nodePublishOptions()); err != nil {
		t.Fatal(err)
	}
	e := servertest.Recv(t, pubs, "personal publication")
	if e.Channel != "personal:#alice" || string(e.Data) != `{"note":"for alice"}` {
		t.Fatalf("got %+v", e)
	}
	// Nobody else may subscribe to it.
	bob := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "bob"))
	if code := refused(t, bob, "personal:#alice", centrifuge.SubscriptionConfig{}); code != 103 {
		t.Fatalf("bob on alice's personal channel: %d", code)
	}
	if users, ok := auth.AllowedUsers("personal:#alice"); !ok || len(users) != 1 {
		t.Fatal(users)
	}
}
