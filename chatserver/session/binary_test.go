package session_test

import (
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/store"
)

// binaryConfig adds "bin", a namespace that allows binary data.
func binaryConfig() config.Config {
	cfg := servertest.Config()
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{
		Name: "bin", History: config.History{Size: 100, TTL: config.Duration(time.Hour)}, Recovery: true, AllowBinary: true,
	})
	return cfg
}

// stillConnected fails when a JSON client was disconnected: no publication may
// close another user's connection.
func stillConnected(t *testing.T, c *centrifuge.Client, disconnected <-chan centrifuge.DisconnectedEvent) {
	t.Helper()
	select {
	case e := <-disconnected:
		t.Fatalf("JSON client disconnected: %d %s", e.Code, e.Reason)
	default:
	}
	if c.State() != centrifuge.StateConnected {
		t.Fatalf("JSON client is %s", c.State())
	}
}

// The rule: a namespace is JSON-only unless it sets allowBinary. In a
// JSON-only namespace every publish path refuses data that is not JSON (107);
// in a binary namespace protobuf clients exchange any bytes and JSON clients
// do not get the publications they cannot carry. Either way no publication
// can disconnect another user, not live and not from history.
func TestBinaryDataCannotDisconnectJSONClients(t *testing.T) {
	srv := servertest.Start(t, binaryConfig(), nil, nil)
	binary := []byte{0xff, 0x00, 0xfe}

	pb := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "mallory"))
	js := servertest.NewClient(t, srv.WS, "json", centrifuge.Config{Token: servertest.Token(t, "alice")})
	disconnected := make(chan centrifuge.DisconnectedEvent, 4)
	js.OnDisconnected(func(e centrifuge.DisconnectedEvent) { servertest.Send(disconnected, e) })
	if err := js.Connect(); err != nil {
		t.Fatal(err)
	}

	t.Run("json-only namespace refuses binary publish", func(t *testing.T) {
		jsSub := servertest.Subscribe(t, js, "room:bin", centrifuge.SubscriptionConfig{})
		servertest.Subscribe(t, pb, "room:bin", centrifuge.SubscriptionConfig{})
		if _, err := pb.Publish(ctx(t), "room:bin", binary); err == nil || serverErr(t, err).Code != 107 {
			t.Fatalf("binary publish in a JSON-only namespace: %v, want error 107", err)
		}
		if _, err := pb.Publish(ctx(t), "room:bin", []byte(`{"ok":1}`)); err != nil {
			t.Fatal(err)
		}
		if p := servertest.Recv(t, jsSub.Pubs, "JSON publication"); string(p.Data) != `{"ok":1}` {
			t.Fatalf("got %q", p.Data)
		}
		stillConnected(t, js, disconnected)
	})

	t.Run("binary namespace: JSON subscribers skip what they cannot carry", func(t *testing.T) {
		jsSub := servertest.Subscribe(t, js, "bin:1", centrifuge.SubscriptionConfig{})
		pbSub := servertest.Subscribe(t, pb, "bin:1", centrifuge.SubscriptionConfig{})
		if _, err := pb.Publish(ctx(t), "bin:1", binary); err != nil {
			t.Fatal(err)
		}
		if p := servertest.Recv(t, pbSub.Pubs, "binary publication"); string(p.Data) != string(binary) {
			t.Fatalf("protobuf subscriber got %q", p.Data)
		}
		if _, err := pb.Publish(ctx(t), "bin:1", []byte(`{"after":1}`)); err != nil {
			t.Fatal(err)
		}
		if p := servertest.Recv(t, jsSub.Pubs, "JSON publication after binary"); string(p.Data) != `{"after":1}` {
			t.Fatalf("JSON subscriber got %q first", p.Data)
		}
		stillConnected(t, js, disconnected)
		h, err := js.History(ctx(t), "bin:1", centrifuge.WithHistoryLimit(10))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Publications) != 1 || string(h.Publications[0].Data) != `{"after":1}` {
			t.Fatalf("JSON history %+v: want only the JSON publication", h.Publications)
		}
		stillConnected(t, js, disconnected)
	})

	t.Run("binary already stored in a JSON-only namespace stays out of JSON replies", func(t *testing.T) {
		// What an older server let in before the rule: written straight to the store.
		if _, err := srv.Node.Store().Append(ctx(t), "room:old", &message.Publication{Data: binary}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Node.Store().Append(ctx(t), "room:old", &message.Publication{Data: []byte(`{"n":2}`)}, store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		servertest.Subscribe(t, js, "room:old", centrifuge.SubscriptionConfig{})
		h, err := js.History(ctx(t), "room:old", centrifuge.WithHistoryLimit(10))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Publications) != 1 || h.Publications[0].Offset != 2 {
			t.Fatalf("history %+v", h.Publications)
		}
		stillConnected(t, js, disconnected)
		// Recovery from before the binary publication reads it too.
		raw := servertest.DialRaw(t, srv.WS, "json")
		raw.Connect(t, servertest.Token(t, "carol"))
		id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room:old", Recover: true, Epoch: h.Epoch}})
		rep := raw.Reply(t, id)
		if rep.Error != nil || rep.Subscribe == nil {
			t.Fatalf("recovering subscribe: %+v", rep)
		}
		if pubs := rep.Subscribe.Publications; len(pubs) != 1 || pubs[0].Offset != 2 {
			t.Fatalf("recovered %+v", pubs)
		}
	})
}
