package session_test

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// dialExpectingDisconnect connects and returns the disconnect event.
func dialExpectingDisconnect(t *testing.T, url, proto string, cfg centrifuge.Config) centrifuge.DisconnectedEvent {
	t.Helper()
	c := servertest.NewClient(t, url, proto, cfg)
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
	c.OnConnected(func(centrifuge.ConnectedEvent) { t.Error("connected, want refused") })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	return servertest.Recv(t, disconnected, "disconnect")
}

func TestConnectionTokens(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.Audience = "parley"
	cfg.Auth.Issuer = "https://issuer.test"
	srv := servertest.Start(t, cfg, nil, nil)
	good := func(user string, ttl time.Duration) jwt.Claims {
		c := servertest.TokenClaims(user, ttl)
		c.Audience = jwt.ClaimStrings{"parley"}
		c.Issuer = "https://issuer.test"
		return c
	}
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			servertest.Connect(t, srv.WS, proto, servertest.Sign(t, good("alice", time.Hour), servertest.Secret))

			tests := []struct {
				name   string
				claims jwt.Claims
				key    []byte
				code   uint32
			}{
				{"forged signature", good("alice", time.Hour), []byte("not-the-key-not-the-key-not-the-k"), 3500},
				{"wrong audience", func() jwt.Claims {
					c := servertest.TokenClaims("alice", time.Hour)
					c.Audience, c.Issuer = jwt.ClaimStrings{"other"}, "https://issuer.test"
					return c
				}(), servertest.Secret, 3500},
				{"wrong issuer", func() jwt.Claims {
					c := servertest.TokenClaims("alice", time.Hour)
					c.Audience, c.Issuer = jwt.ClaimStrings{"parley"}, "https://evil.test"
					return c
				}(), servertest.Secret, 3500},
				{"subscription token used to connect", func() jwt.Claims {
					cc := servertest.TokenClaims("alice", time.Hour)
					cc.Audience, cc.Issuer, cc.Channel = jwt.ClaimStrings{"parley"}, "https://issuer.test", "room:1"
					return cc
				}(), servertest.Secret, 3500},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					e := dialExpectingDisconnect(t, srv.WS, proto, centrifuge.Config{Token: servertest.Sign(t, tc.claims, tc.key)})
					if e.Code != tc.code {
						t.Fatalf("disconnect %d %q, want %d", e.Code, e.Reason, tc.code)
					}
				})
			}
			t.Run("no token without anonymous access", func(t *testing.T) {
				e := dialExpectingDisconnect(t, srv.WS, proto, centrifuge.Config{})
				if e.Code != 101 {
					t.Fatalf("got %d %q, want 101 unauthorized", e.Code, e.Reason)
				}
			})
			t.Run("expired token is refreshed through GetToken", func(t *testing.T) {
				var calls atomic.Int32
				c := servertest.NewClient(t, srv.WS, proto, centrifuge.Config{
					Token: servertest.Sign(t, good("alice", -time.Minute), servertest.Secret),
					GetToken: func(centrifuge.ConnectionTokenEvent) (string, error) {
						calls.Add(1)
						return servertest.Sign(t, good("alice", time.Hour), servertest.Secret), nil
					},
				})
				connected := make(chan struct{}, 1)
				c.OnConnected(func(centrifuge.ConnectedEvent) { servertest.Send(connected, struct{}{}) })
				if err := c.Connect(); err != nil {
					t.Fatal(err)
				}
				servertest.Recv(t, connected, "connect with the refreshed token")
				if calls.Load() != 1 {
					t.Fatalf("GetToken called %d times, want 1 (after error 109)", calls.Load())
				}
			})
		})
	}
}

// A connection whose token is about to expire refreshes it with the refresh
// command and stays connected; without a refresh it is disconnected.
func TestConnectionRefresh(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	var calls atomic.Int32
	c := servertest.NewClient(t, srv.WS, "json", centrifuge.Config{
		// exp is in whole seconds, so this token expires 2-3s from now.
		Token: servertest.Sign(t, servertest.TokenClaims("alice", 3*time.Second), servertest.Secret),
		GetToken: func(centrifuge.ConnectionTokenEvent) (string, error) {
			calls.Add(1)
			return servertest.Sign(t, servertest.TokenClaims("alice", time.Hour), servertest.Secret), nil
		},
	})
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	connecting := make(chan centrifuge.ConnectingEvent, 4)
	c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
	c.OnConnecting(func(e centrifuge.ConnectingEvent) { servertest.Send(connecting, e) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	<-connecting
	start := time.Now()
	for calls.Load() < 1 {
		if time.Since(start) > 6*time.Second {
			t.Fatal("client never refreshed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Past the first token's expiry, still on the same connection.
	servertest.None(t, connecting, time.Until(start.Add(3500*time.Millisecond)), "reconnect (the refresh should have kept the connection)")
	if c.State() != centrifuge.StateConnected {
		t.Fatalf("state %s", c.State())
	}

	// A raw client that never refreshes is disconnected with "connection expired" (3005).
	raw := servertest.DialRaw(t, srv.WS, "json")
	raw.Connect(t, servertest.Sign(t, servertest.TokenClaims("bob", 1200*time.Millisecond), servertest.Secret))
	if code := raw.WaitClose(t); code != 3005 {
		t.Fatalf("close code %d, want 3005", code)
	}
}

// A token that expired may still be refreshed during auth.expiredCloseDelay,
// as the SDKs do when the connect reply's ttl runs out (Centrifugo's
// client_expired_close_delay): the connection stays. Before the grace, a
// refresh arriving a moment after the expiry found the connection closed.
func TestExpiredTokenCanBeRefreshedDuringTheGrace(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.ExpiredCloseDelay = config.Duration(2 * time.Second)
	srv := servertest.Start(t, cfg, nil, nil)
	raw := servertest.DialRaw(t, srv.WS, "json")
	res := raw.Connect(t, servertest.Sign(t, servertest.TokenClaims("carol", 1200*time.Millisecond), servertest.Secret))
	if !res.Expires || res.Ttl == 0 {
		t.Fatalf("connect result expires %v ttl %d", res.Expires, res.Ttl)
	}
	time.Sleep(time.Duration(res.Ttl)*time.Second + 500*time.Millisecond) // past exp, within the grace
	id := raw.Command(t, &protocol.Command{Refresh: &protocol.RefreshRequest{
		Token: servertest.Sign(t, servertest.TokenClaims("carol", time.Hour), servertest.Secret)}})
	if r := raw.Reply(t, id); r.Error != nil || r.Refresh == nil || r.Refresh.Ttl < 3000 {
		t.Fatalf("refresh after expiry within the grace: %+v", r)
	}
	// Past the first token's expiry plus the grace: still connected (the
	// read ends by its deadline, not by a close).
	end := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(end) {
		_, err := raw.Read(time.Until(end))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break
		}
		if err != nil {
			t.Fatalf("the refreshed connection closed: %v", err)
		}
	}
}

func TestAnonymousAccess(t *testing.T) {
	cfg := servertest.Config()
	cfg.Auth.AllowAnonymous = true
	srv := servertest.Start(t, cfg, nil, nil)
	anon := servertest.Connect(t, srv.WS, "json", "")
	servertest.Subscribe(t, anon, "news:today", centrifuge.SubscriptionConfig{})
	s := servertest.NewSub(t, anon, "room:1", centrifuge.SubscriptionConfig{})
	if err := s.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if e := servertest.Recv(t, s.Unsubscribed, "refusal"); e.Code != 103 {
		t.Fatalf("anonymous in room: %d, want 103 permission denied", e.Code)
	}
	if _, err := anon.Publish(ctx(t), "open:1", []byte(`{}`)); serverErr(t, err).Code != 103 {
		t.Fatalf("anonymous publish: %v", err)
	}
}
