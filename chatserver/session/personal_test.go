package session_test

import (
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// The personal channel is a server-side subscription: its connect result
// carries a position, and a reconnecting client that sends it back in
// connect.subs recovers what it missed, as a client-side subscription would.
func TestPersonalChannelRecovers(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const personal = "personal:#alice"
	first := servertest.DialRaw(t, srv.WS, "protobuf")
	res := first.Connect(t, servertest.Token(t, "alice"))
	pos := res.Subs[personal]
	if pos == nil || !pos.Recoverable || pos.Epoch == "" {
		t.Fatalf("personal channel in the connect result: %+v", pos)
	}
	_ = first.Conn.Close()
	for range 2 {
		if _, err := srv.Node.Publish(ctx(t), personal, []byte(`{"note":1}`), nil, nodePublishOptions()); err != nil {
			t.Fatal(err)
		}
	}
	for _, proto := range servertest.Protocols {
		again := servertest.DialRaw(t, srv.WS, proto)
		id := again.Command(t, &protocol.Command{Connect: &protocol.ConnectRequest{
			Token: servertest.Token(t, "alice"),
			Subs:  map[string]*protocol.SubscribeRequest{personal: {Recover: true, Epoch: pos.Epoch, Offset: pos.Offset}},
		}})
		rep := again.Reply(t, id)
		got := rep.Connect.Subs[personal]
		if got == nil || !got.WasRecovering || !got.Recovered || len(got.Publications) != 2 || got.Offset != 2 {
			t.Fatalf("%s: recovered personal channel %+v", proto, got)
		}
	}
}

// No publication of a server-side subscription reaches the client before
// the connect reply that announces the subscription.
func TestConnectReplyComesBeforePersonalPublications(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const personal = "personal:#bob"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = srv.Node.Publish(ctx(t), personal, []byte(`{}`), nil, nodePublishOptions())
		}
	})
	defer wg.Wait()
	defer close(stop)
	token := servertest.Token(t, "bob")
	for range 20 {
		raw := servertest.DialRaw(t, srv.WS, "json")
		id := raw.Command(t, &protocol.Command{Connect: &protocol.ConnectRequest{Token: token}})
		reps, err := raw.Read(servertest.Timeout)
		if err != nil || len(reps) == 0 {
			t.Fatalf("read: %v", err)
		}
		if reps[0].Id != id || reps[0].Connect == nil {
			t.Fatalf("first reply %+v, want the connect reply", reps[0])
		}
		_ = raw.Conn.Close()
		time.Sleep(5 * time.Millisecond)
	}
}
