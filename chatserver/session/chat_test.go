package session_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func rpc(t *testing.T, c *centrifuge.Client, method string, params any) (map[string]any, error) {
	t.Helper()
	data, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.RPC(ctx(t), method, data)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(res.Data, &out); err != nil {
		t.Fatalf("rpc %s result %q: %v", method, res.Data, err)
	}
	return out, nil
}

func TestChatSemantics(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	const room = "room:chat"
	alice := servertest.Connect(t, srv.WS, "json", servertest.Token(t, "alice"))
	bob := servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob"))
	as := servertest.Subscribe(t, alice, room, centrifuge.SubscriptionConfig{})
	bs := servertest.Subscribe(t, bob, room, centrifuge.SubscriptionConfig{})

	t.Run("idempotent publish", func(t *testing.T) {
		first, err := rpc(t, alice, "publish", map[string]any{"channel": room, "data": map[string]string{"text": "hi"}, "key": "msg-1"})
		if err != nil {
			t.Fatal(err)
		}
		retry, err := rpc(t, alice, "publish", map[string]any{"channel": room, "data": map[string]string{"text": "hi"}, "key": "msg-1"})
		if err != nil {
			t.Fatal(err)
		}
		if first["offset"] != retry["offset"] || retry["duplicate"] != true {
			t.Fatalf("first %v retry %v: the retry must return the first offset as a duplicate", first, retry)
		}
		p := servertest.Recv(t, bs.Pubs, "publication")
		if p.Offset != 1 {
			t.Fatalf("offset %d", p.Offset)
		}
		servertest.None(t, bs.Pubs, 200*time.Millisecond, "second broadcast of a duplicate")
		servertest.Recv(t, as.Pubs, "own publication")
	})
	t.Run("edit and delete by the author only", func(t *testing.T) {
		if _, err := rpc(t, bob, "edit", map[string]any{"channel": room, "offset": 1, "data": map[string]string{"text": "bob was here"}}); serverErr(t, err).Code != 103 {
			t.Fatalf("bob editing alice's message: %v", err)
		}
		if _, err := rpc(t, alice, "edit", map[string]any{"channel": room, "offset": 1, "data": map[string]string{"text": "hello"}}); err != nil {
			t.Fatal(err)
		}
		p := servertest.Recv(t, bs.Pubs, "edit")
		if p.Tags["type"] != "edit" || p.Tags["ref"] != "1" || string(p.Data) != `{"text":"hello"}` {
			t.Fatalf("edit publication %+v", p)
		}
		if _, err := rpc(t, alice, "delete", map[string]any{"channel": room, "offset": 1}); err != nil {
			t.Fatal(err)
		}
		p = servertest.Recv(t, bs.Pubs, "delete")
		if p.Tags["type"] != "delete" || p.Tags["ref"] != "1" {
			t.Fatalf("delete publication %+v", p)
		}
		if _, err := rpc(t, alice, "edit", map[string]any{"channel": room, "offset": 99, "data": map[string]string{}}); serverErr(t, err).Code != 108 {
			t.Fatalf("editing a message that does not exist: %v", err)
		}
		h, err := bs.History(ctx(t), centrifuge.WithHistoryLimit(-1))
		if err != nil || len(h.Publications) != 3 {
			t.Fatalf("history: %+v %v (message, edit, delete)", h.Publications, err)
		}
	})
	t.Run("typing indicators are broadcast, never stored", func(t *testing.T) {
		if _, err := rpc(t, alice, "typing", map[string]any{"channel": room}); err != nil {
			t.Fatal(err)
		}
		p := servertest.Recv(t, bs.Pubs, "typing")
		if p.Offset != 0 || p.Tags["type"] != "typing" || p.Info == nil || p.Info.User != "alice" {
			t.Fatalf("typing %+v", p)
		}
		// The same through send (no reply).
		if err := bob.Send(ctx(t), []byte(`{"method":"typing","data":{"channel":"room:chat"}}`)); err != nil {
			t.Fatal(err)
		}
		for {
			p := servertest.Recv(t, as.Pubs, "typing from bob via send")
			if p.Tags["type"] == "typing" && p.Info.User == "bob" {
				break
			}
		}
		h, err := bs.History(ctx(t), centrifuge.WithHistoryLimit(-1))
		if err != nil || len(h.Publications) != 3 {
			t.Fatalf("typing must not be stored: %d publications", len(h.Publications))
		}
	})
	t.Run("read receipts and unread counts", func(t *testing.T) {
		states, err := rpc(t, bob, "unread", map[string]any{"channels": []string{room}})
		if err != nil {
			t.Fatal(err)
		}
		st := states["states"].([]any)[0].(map[string]any)
		if st["unread"].(float64) != 3 {
			t.Fatalf("before reading: %v", st)
		}
		if _, err := rpc(t, bob, "read", map[string]any{"channel": room, "offset": 2}); err != nil {
			t.Fatal(err)
		}
		states, err = rpc(t, bob, "unread", map[string]any{"channels": []string{room}})
		if err != nil {
			t.Fatal(err)
		}
		st = states["states"].([]any)[0].(map[string]any)
		if st["unread"].(float64) != 1 || st["last_read"].(float64) != 2 {
			t.Fatalf("after reading to 2: %v", st)
		}
	})
	t.Run("bad rpc", func(t *testing.T) {
		if _, err := alice.RPC(ctx(t), "nope", []byte(`{}`)); serverErr(t, err).Code != 108 {
			t.Fatalf("unknown method: %v", err)
		}
		if _, err := alice.RPC(ctx(t), "publish", []byte(`{"channel":""}`)); serverErr(t, err).Code != 107 {
			t.Fatalf("bad params: %v", err)
		}
	})
}
