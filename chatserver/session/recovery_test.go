package session_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// cuttable dials real TCP connections and can cut the latest one, like a
// network drop (no close frame).
type cuttable struct {
	mu   sync.Mutex
	last net.Conn
}

func (c *cuttable) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.last = conn
		c.mu.Unlock()
	}
	return conn, err
}

func (c *cuttable) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.last.Close()
}

// A client that loses its connection recovers every publication it missed,
// in order, when it comes back, and the server says it recovered.
func TestRecoveryAfterDroppedConnection(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			channel := "room:recovery-" + proto
			var net cuttable
			alice := servertest.NewClient(t, srv.WS, proto, centrifuge.Config{
				Token: servertest.Token(t, "alice"), NetDialContext: net.dial,
				MinReconnectDelay: 300 * time.Millisecond, MaxReconnectDelay: 400 * time.Millisecond,
			})
			connecting := make(chan centrifuge.ConnectingEvent, 4)
			alice.OnConnecting(func(e centrifuge.ConnectingEvent) { servertest.Send(connecting, e) })
			if err := alice.Connect(); err != nil {
				t.Fatal(err)
			}
			sub := servertest.Subscribe(t, alice, channel, centrifuge.SubscriptionConfig{Recoverable: true})
			bob := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "bob"))
			publish := func(n int) {
				if _, err := bob.Publish(ctx(t), channel, fmt.Appendf(nil, `{"n":%d}`, n)); err != nil {
					t.Fatal(err)
				}
			}
			// bob is not subscribed: room allows publishing by subscribers only.
			bobSub := servertest.Subscribe(t, bob, channel, centrifuge.SubscriptionConfig{})
			_ = bobSub
			publish(1)
			if p := servertest.Recv(t, sub.Pubs, "first publication"); p.Offset != 1 {
				t.Fatalf("offset %d", p.Offset)
			}
			<-connecting // the initial connect
			net.cut()
			servertest.Recv(t, connecting, "reconnecting after the cut")
			for n := 2; n <= 4; n++ {
				publish(n)
			}
			ev := servertest.Recv(t, sub.Subscribed, "resubscribe")
			if !ev.WasRecovering || !ev.Recovered {
				t.Fatalf("resubscribe: %+v, want recovered", ev)
			}
			for want := uint64(2); want <= 4; want++ {
				p := servertest.Recv(t, sub.Pubs, "recovered publication")
				if p.Offset != want || string(p.Data) != fmt.Sprintf(`{"n":%d}`, want) {
					t.Fatalf("got offset %d data %s, want %d", p.Offset, p.Data, want)
				}
			}
			publish(5)
			if p := servertest.Recv(t, sub.Pubs, "live publication after recovery"); p.Offset != 5 {
				t.Fatalf("offset %d, want 5", p.Offset)
			}
		})
	}
}

// A position from another epoch cannot be recovered: the subscribe succeeds
// with recovered=false (or fails with 112 when the client asks for that).
func TestRecoveryFromUnknownEpoch(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	channel := "room:epoch"
	c := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	sub := servertest.Subscribe(t, c, channel, centrifuge.SubscriptionConfig{Recoverable: true})
	if _, err := sub.Publish(ctx(t), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	servertest.Recv(t, sub.Pubs, "publication")
	// GetState makes the client ask for error 112 instead of a silent reset,
	// and GetState's position is one the server never issued.
	calls := make(chan struct{}, 8)
	c2 := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))
	s2 := servertest.NewSub(t, c2, channel, centrifuge.SubscriptionConfig{
		Recoverable: true,
		GetState: func(centrifuge.SubscriptionGetStateEvent) (centrifuge.StreamPosition, error) {
			calls <- struct{}{}
			if len(calls) == 1 {
				return centrifuge.StreamPosition{Offset: 1, Epoch: "lost-epoch"}, nil
			}
			return centrifuge.StreamPosition{Offset: 1, Epoch: ""}, fmt.Errorf("stop")
		},
	})
	if err := s2.Subscribe(); err != nil {
		t.Fatal(err)
	}
	servertest.Recv(t, calls, "first GetState")
	servertest.Recv(t, calls, "GetState again after 112 unrecoverable position")
}
