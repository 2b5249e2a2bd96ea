package session_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/centrifugal/protocol"

	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/servertest"
	"github.com/parley-chat/parley/chatserver/session"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// memTransport collects what a session queues; the fuzz target checks that
// every reply decodes.
type memTransport struct {
	proto  protocol.Type
	mu     sync.Mutex
	out    [][]byte
	closed *codes.Disconnect
}

func (m *memTransport) Protocol() protocol.Type { return m.proto }
func (m *memTransport) Enqueue(data []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out = append(m.out, data)
	return true
}
func (m *memTransport) EnqueueBatch(data [][]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out = append(m.out, data...)
	return true
}
func (m *memTransport) Close(d codes.Disconnect) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed == nil {
		m.closed = &d
	}
}

// FuzzHandleFrame feeds arbitrary frames to a session (after a valid connect
// when connected is true): decoding and dispatch must never panic, hang, or
// queue a reply that does not decode.
func FuzzHandleFrame(f *testing.F) {
	seeds := []struct {
		protobuf, connected bool
		frame               string
	}{
		{false, false, `{"id":1,"connect":{}}`},
		{false, true, `{"id":2,"subscribe":{"channel":"room:1","recover":true,"epoch":"x","offset":5}}`},
		{false, true, `{"id":2,"subscribe":{"channel":"room:1"}}` + "\n" + `{"id":3,"publish":{"channel":"room:1","data":{"a":1}}}`},
		{false, true, `{"id":4,"history":{"channel":"room:1","limit":-1,"reverse":true,"since":{"offset":1,"epoch":""}}}`},
		{false, true, `{"id":5,"presence":{"channel":"room:1"}}` + "\n" + `{"id":6,"presence_stats":{"channel":"room:1"}}`},
		{false, true, `{"id":7,"rpc":{"method":"publish","data":{"channel":"open:1","data":{},"key":"k"}}}`},
		{false, true, `{"id":8,"rpc":{"method":"unread","data":{"channels":["room:1"]}}}`},
		{false, true, `{"send":{"data":{"method":"typing","data":{"channel":"room:1"}}}}`},
		{false, true, `{"id":9,"refresh":{"token":"x.y.z"}}`},
		{false, true, `{"id":10,"sub_refresh":{"channel":"room:1","token":""}}`},
		{false, true, `{"id":11,"unsubscribe":{"channel":"room:1"}}`},
		{false, true, `{}`},
		{false, true, `{"id":12}`},
		{false, false, `{"id":1,"connect":`},
		{true, false, "\x00"},
		{true, true, "\x0a\x08\x02\x2a\x06\x0a\x04open"},
		{true, true, "\x7f\x01"},
	}
	for _, s := range seeds {
		f.Add(s.protobuf, s.connected, []byte(s.frame))
	}
	cfg := servertest.Config()
	cfg.Auth.AllowAnonymous = true
	cfg.Namespaces[1].AllowAnonymous = true // "open": lets the anonymous fuzz session reach publish and history
	b := brokermemory.New()
	s := storememory.New(storememory.Options{})
	n, err := node.New(cfg, b, s, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Run(ctx); close(done) }()
	f.Cleanup(func() {
		cancel()
		<-done
		_ = b.Close()
		_ = s.Close()
	})
	f.Fuzz(func(t *testing.T, protobuf, connected bool, frame []byte) {
		tr := &memTransport{proto: protocol.TypeJSON}
		if protobuf {
			tr.proto = protocol.TypeProtobuf
		}
		sess := session.New(n, tr)
		defer sess.Close()
		if connected {
			var connect []byte
			if protobuf {
				connect, _ = protocol.NewProtobufCommandEncoder().Encode(&protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{}})
			} else {
				connect, _ = protocol.NewJSONCommandEncoder().Encode(&protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{}})
			}
			if err := sess.HandleFrame(connect); err != nil {
				t.Fatalf("valid connect refused: %v", err)
			}
		}
		err := sess.HandleFrame(append([]byte(nil), frame...))
		if err != nil {
			if _, ok := err.(codes.Disconnect); !ok {
				t.Fatalf("HandleFrame returned %T %v, want a codes.Disconnect", err, err)
			}
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, out := range tr.out {
			var dec protocol.ReplyDecoder
			if protobuf {
				dec = protocol.NewProtobufReplyDecoder(append(protoLen(len(out)), out...))
			} else {
				dec = protocol.NewJSONReplyDecoder(out)
			}
			if _, err := dec.Decode(); err != nil {
				t.Fatalf("queued reply %q does not decode: %v", out, err)
			}
		}
	})
}

func protoLen(n int) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}
