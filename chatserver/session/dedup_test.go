package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/broker"
	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// gatedBroker holds publications of one channel in Publish until the gate
// opens: the window between a publication's append to history and its
// delivery, stretched.
type gatedBroker struct {
	broker.Broker
	channel string
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedBroker) Publish(ctx context.Context, channel string, pub *message.Publication, sp message.StreamPosition) error {
	if channel == g.channel {
		g.entered <- struct{}{}
		<-g.gate
	}
	return g.Broker.Publish(ctx, channel, pub, sp)
}

// A publication already in history when a client subscribes (so inside the
// position, or the recovered publications, of its subscribe reply) but
// delivered by the broker after the subscription went live reaches the client
// once: through the reply, not again as a push. Found by chatbench's
// reconnect storm, where recovering clients received such publications twice.
func TestPublicationInsideTheSubscribePositionIsNotDeliveredAgain(t *testing.T) {
	const channel = "room:dedup"
	g := &gatedBroker{Broker: brokermemory.New(), channel: channel, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	srv := servertest.Start(t, servertest.Config(), g, nil)

	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	early := servertest.Subscribe(t, alice, channel, centrifuge.SubscriptionConfig{})

	published := make(chan error, 1)
	go func() {
		_, err := srv.Node.Publish(context.Background(), channel, []byte(`{"n":1}`), nil, nodePublishOptions())
		published <- err
	}()
	select {
	case <-g.entered: // appended to history (offset 1), not yet delivered
	case <-time.After(servertest.Timeout):
		t.Fatal("publish did not reach the broker")
	}

	bob := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "bob"))
	late := servertest.NewSub(t, bob, channel, centrifuge.SubscriptionConfig{})
	if err := late.Subscribe(); err != nil {
		t.Fatal(err)
	}
	ev := servertest.Recv(t, late.Subscribed, "bob subscribed")
	if ev.StreamPosition == nil || ev.StreamPosition.Offset != 1 {
		t.Fatalf("bob's position %+v, want offset 1 (the publication is in history)", ev.StreamPosition)
	}

	close(g.gate)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if p := servertest.Recv(t, early.Pubs, "alice's publication"); p.Offset != 1 {
		t.Fatalf("alice got offset %d, want 1", p.Offset)
	}
	if _, err := srv.Node.Publish(context.Background(), channel, []byte(`{"n":2}`), nil, nodePublishOptions()); err != nil {
		t.Fatal(err)
	}
	if p := servertest.Recv(t, late.Pubs, "bob's first publication"); p.Offset != 2 {
		t.Fatalf("bob's first publication has offset %d, want 2: offset 1 was already inside his subscribe position", p.Offset)
	}
	servertest.None(t, late.Pubs, 100*time.Millisecond, "more publications for bob")
}
