package servertest

import (
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"go.uber.org/goleak"
)

// Timeout bounds every wait in these helpers.
const Timeout = 5 * time.Second

// Protocols lists both wire formats for table-driven tests.
var Protocols = []string{"json", "protobuf"}

// NewClient creates a centrifuge-go client (not yet connected) closed at test end.
func NewClient(t testing.TB, url, proto string, cfg centrifuge.Config) *centrifuge.Client {
	t.Helper()
	if cfg.MinReconnectDelay == 0 {
		cfg.MinReconnectDelay = 50 * time.Millisecond
		cfg.MaxReconnectDelay = 200 * time.Millisecond
	}
	var c *centrifuge.Client
	if proto == "protobuf" {
		c = centrifuge.NewProtobufClient(url, cfg)
	} else {
		c = centrifuge.NewJsonClient(url, cfg)
	}
	t.Cleanup(c.Close)
	return c
}

// Connect connects a client with token and waits until it is connected.
func Connect(t testing.TB, url, proto, token string) *centrifuge.Client {
	t.Helper()
	c := NewClient(t, url, proto, centrifuge.Config{Token: token})
	connected := make(chan struct{}, 1)
	disconnected := make(chan centrifuge.DisconnectedEvent, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) { Send(connected, struct{}{}) })
	c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { Send(disconnected, e) })
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	case e := <-disconnected:
		t.Fatalf("disconnected instead of connecting: %d %s", e.Code, e.Reason)
	case <-time.After(Timeout):
		t.Fatal("timeout waiting for connect")
	}
	return c
}

// Sub is a subscription with its events on channels.
type Sub struct {
	*centrifuge.Subscription
	Pubs         chan centrifuge.PublicationEvent
	Joins        chan centrifuge.JoinEvent
	Leaves       chan centrifuge.LeaveEvent
	Subscribed   chan centrifuge.SubscribedEvent
	Unsubscribed chan centrifuge.UnsubscribedEvent
}

// NewSub creates a subscription with buffered event channels (not yet subscribed).
func NewSub(t testing.TB, c *centrifuge.Client, channel string, cfg centrifuge.SubscriptionConfig) *Sub {
	t.Helper()
	sub, err := c.NewSubscription(channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Sub{Subscription: sub,
		Pubs: make(chan centrifuge.PublicationEvent, 1024), Joins: make(chan centrifuge.JoinEvent, 64),
		Leaves: make(chan centrifuge.LeaveEvent, 64), Subscribed: make(chan centrifuge.SubscribedEvent, 16),
		Unsubscribed: make(chan centrifuge.UnsubscribedEvent, 16)}
	sub.OnPublication(func(e centrifuge.PublicationEvent) { Send(s.Pubs, e) })
	sub.OnJoin(func(e centrifuge.JoinEvent) { Send(s.Joins, e) })
	sub.OnLeave(func(e centrifuge.LeaveEvent) { Send(s.Leaves, e) })
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) { Send(s.Subscribed, e) })
	sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { Send(s.Unsubscribed, e) })
	return s
}

// Subscribe subscribes and waits for success.
func Subscribe(t testing.TB, c *centrifuge.Client, channel string, cfg centrifuge.SubscriptionConfig) *Sub {
	t.Helper()
	s := NewSub(t, c, channel, cfg)
	if err := s.Subscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Subscribed:
	case e := <-s.Unsubscribed:
		t.Fatalf("subscribe %s refused: %d %s", channel, e.Code, e.Reason)
	case <-time.After(Timeout):
		t.Fatalf("timeout subscribing to %s", channel)
	}
	return s
}

// Send puts v on ch without blocking forever (a full test channel drops).
func Send[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// Recv waits for a value on ch.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Timeout):
		t.Fatalf("timeout waiting for %s", what)
	}
	var zero T
	return zero
}

// None asserts nothing arrives on ch within d.
func None[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	case <-time.After(d):
	}
}

// LeakOptions are the goleak options for packages testing with centrifuge-go:
// the client keeps one timer goroutine per request for up to its read timeout
// (5s) even after the reply, which is the client's design, not a server leak.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/centrifugal/centrifuge-go.(*Client).sendAsync.func1")}
}
