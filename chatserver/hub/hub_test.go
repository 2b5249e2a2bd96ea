package hub_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/hub"
)

type sink struct {
	id    string
	proto protocol.Type
	mu    sync.Mutex
	got   [][]byte
	disc  []codes.Disconnect
	keep  bool
	// batches counts DeliverPublications calls.
	batches int
}

func (s *sink) ID() string              { return s.id }
func (s *sink) UserID() string          { return "u" + s.id }
func (s *sink) Protocol() protocol.Type { return s.proto }
func (s *sink) DeliverPublication(_ string, _ uint64, data []byte) {
	if s.keep {
		s.mu.Lock()
		s.got = append(s.got, data)
		s.mu.Unlock()
	}
}
func (s *sink) DeliverPublications(channel string, offsets []uint64, data [][]byte) {
	for i, d := range data {
		s.DeliverPublication(channel, offsets[i], d)
	}
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
}
func (s *sink) DeliverPush(data []byte) { s.DeliverPublication("", 0, data) }
func (s *sink) Disconnect(d codes.Disconnect) {
	s.mu.Lock()
	s.disc = append(s.disc, d)
	s.mu.Unlock()
}

// A broadcast is encoded once per protocol: subscribers of one protocol get
// the very same bytes.
func TestBroadcastEncodesOncePerProtocol(t *testing.T) {
	h := hub.New()
	var subs []*sink
	for i := range 6 {
		proto := protocol.TypeJSON
		if i%2 == 1 {
			proto = protocol.TypeProtobuf
		}
		s := &sink{id: fmt.Sprint(i), proto: proto, keep: true}
		subs = append(subs, s)
		if first := h.AddSub("room:1", s); first != (i == 0) {
			t.Fatalf("AddSub first=%v for subscriber %d", first, i)
		}
	}
	n := h.BroadcastPublication("room:1", &protocol.Publication{Data: []byte(`{"a":1}`), Offset: 3})
	if n != 6 {
		t.Fatalf("delivered to %d", n)
	}
	for i, s := range subs {
		if len(s.got) != 1 {
			t.Fatalf("subscriber %d got %d", i, len(s.got))
		}
		if unsafe.SliceData(s.got[0]) != unsafe.SliceData(subs[i%2].got[0]) {
			t.Fatalf("subscriber %d got its own encoding", i)
		}
	}
	var rep protocol.Reply
	if err := rep.UnmarshalCF(subs[1].got[0]); err != nil || rep.Push.Pub.Offset != 3 || rep.Push.Channel != "room:1" {
		t.Fatalf("protobuf push %+v %v", rep.Push, err)
	}
	// Binary data cannot go to JSON subscribers: they skip it (never a
	// disconnect), protobuf ones are served.
	n = h.BroadcastPublication("room:1", &protocol.Publication{Data: []byte{0xff, 0x00}})
	if n != 3 || len(subs[0].disc) != 0 || len(subs[0].got) != 1 || len(subs[1].got) != 2 {
		t.Fatalf("binary broadcast: n=%d json disc %v got %d, protobuf got %d", n, subs[0].disc, len(subs[0].got), len(subs[1].got))
	}
	// In a batch, a JSON subscriber gets the publications it can carry.
	h.BroadcastPublications("room:1", []*protocol.Publication{{Data: []byte{0xff}, Offset: 4}, {Data: []byte(`{}`), Offset: 5}})
	if len(subs[0].disc) != 0 || len(subs[0].got) != 2 || len(subs[1].got) != 4 {
		t.Fatalf("mixed batch: json disc %v got %d, protobuf got %d", subs[0].disc, len(subs[0].got), len(subs[1].got))
	}
	for i, s := range subs {
		if last := h.RemoveSub("room:1", s); last != (i == len(subs)-1) {
			t.Fatalf("RemoveSub last=%v for %d", last, i)
		}
	}
	if len(h.Channels()) != 0 {
		t.Fatal("channel left behind")
	}
}

func TestUserIndex(t *testing.T) {
	h := hub.New()
	a1, b := &sink{id: "1"}, &sink{id: "3"}
	h.AddConn(a1)
	alice2 := &aliasSink{sink: &sink{id: "2"}, user: "u1"} // a second tab of user u1
	if n := h.AddConn(alice2); n != 2 {
		t.Fatalf("alice has %d connections", n)
	}
	h.AddConn(b)
	if len(h.UserConns("u1")) != 2 || h.NumConns() != 3 {
		t.Fatalf("user conns %d, all %d", len(h.UserConns("u1")), h.NumConns())
	}
	h.RemoveConn(a1)
	if len(h.UserConns("u1")) != 1 {
		t.Fatal("removal")
	}
}

type aliasSink struct {
	*sink
	user string
}

func (a *aliasSink) UserID() string { return a.user }

// BenchmarkBroadcast measures the broadcast path: one publication encoded
// once per protocol and handed to N subscribers (half JSON, half protobuf).
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := hub.New()
			for i := range n {
				proto := protocol.TypeJSON
				if i%2 == 1 {
					proto = protocol.TypeProtobuf
				}
				h.AddSub("room:bench", &sink{id: fmt.Sprint(i), proto: proto})
			}
			pub := &protocol.Publication{Data: []byte(`{"text":"hello, this is a chat message of ordinary size"}`), Offset: 42,
				Info: &protocol.ClientInfo{User: "alice", Client: "c0ffee"}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.BroadcastPublication("room:bench", pub)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/subscriber")
		})
	}
}

// A room big enough to be broadcast in parallel parts still reaches every
// subscriber exactly once per publication and in publication order, and a
// subscriber that leaves (swapped out of the middle of the list) gets nothing
// more while the one moved into its place keeps getting everything.
func TestBigRoomBroadcastInParallelParts(t *testing.T) {
	h := hub.New()
	const n = 5000
	subs := make([]*sink, n)
	for i := range subs {
		proto := protocol.TypeJSON
		if i%3 == 0 {
			proto = protocol.TypeProtobuf
		}
		subs[i] = &sink{id: fmt.Sprint(i), proto: proto, keep: true}
		h.AddSub("room:big", subs[i])
	}
	h.AddSub("room:big", subs[7]) // again: no second copy
	const pubs = 20
	for p := range pubs {
		if p == pubs/2 {
			h.RemoveSub("room:big", subs[100])
			h.RemoveSub("room:big", subs[n-1])
		}
		want := n
		if p >= pubs/2 {
			want = n - 2
		}
		if got := h.BroadcastPublication("room:big", &protocol.Publication{Data: fmt.Appendf(nil, `{"p":%d}`, p), Offset: uint64(p + 1)}); got != want {
			t.Fatalf("publication %d reached %d, want %d", p, got, want)
		}
	}
	if h.NumSubscribers("room:big") != n-2 || len(h.Subscribers("room:big")) != n-2 {
		t.Fatalf("%d subscribers left, want %d", h.NumSubscribers("room:big"), n-2)
	}
	for i, s := range subs {
		want := pubs
		if i == 100 || i == n-1 {
			want = pubs / 2
		}
		if len(s.got) != want {
			t.Fatalf("subscriber %d got %d publications, want %d", i, len(s.got), want)
		}
		for p, data := range s.got {
			var rep protocol.Reply
			if s.proto == protocol.TypeJSON {
				if err := json.Unmarshal(data, &rep); err != nil {
					t.Fatal(err)
				}
			} else if err := rep.UnmarshalCF(data); err != nil {
				t.Fatal(err)
			}
			if rep.Push.Pub.Offset != uint64(p+1) {
				t.Fatalf("subscriber %d: publication %d has offset %d", i, p, rep.Push.Pub.Offset)
			}
		}
	}
}

// Several publications broadcast together reach each subscriber in one
// DeliverPublications call, in order, encoded for its protocol; when one of
// them cannot be sent as JSON, JSON subscribers get the others.
func TestBroadcastPublicationsTogether(t *testing.T) {
	h := hub.New()
	subs := make([]*sink, 1000) // big enough to be split into parallel parts
	for i := range subs {
		proto := protocol.TypeJSON
		if i%2 == 1 {
			proto = protocol.TypeProtobuf
		}
		subs[i] = &sink{id: fmt.Sprint(i), proto: proto, keep: true}
		h.AddSub("room:b", subs[i])
	}
	var pubs []*protocol.Publication
	for off := range uint64(5) {
		pubs = append(pubs, &protocol.Publication{Data: fmt.Appendf(nil, `{"n":%d}`, off), Offset: off + 1})
	}
	if n := h.BroadcastPublications("room:b", pubs); n != len(subs) {
		t.Fatalf("reached %d", n)
	}
	for i, s := range subs {
		if s.batches != 1 || len(s.got) != 5 {
			t.Fatalf("subscriber %d: %d calls, %d publications", i, s.batches, len(s.got))
		}
		for j, data := range s.got {
			var rep protocol.Reply
			var err error
			if s.proto == protocol.TypeJSON {
				err = json.Unmarshal(data, &rep)
			} else {
				err = rep.UnmarshalCF(data)
			}
			if err != nil || rep.Push.Pub.Offset != uint64(j+1) {
				t.Fatalf("subscriber %d publication %d: %v %+v", i, j, err, rep.Push)
			}
		}
	}
	binary := append(pubs[:1:1], &protocol.Publication{Data: []byte{0xff, 0x00}, Offset: 9})
	h.BroadcastPublications("room:b", binary)
	for i, s := range subs {
		want := 7 // the JSON publication and, for protobuf, the binary one too
		if s.proto == protocol.TypeJSON {
			want = 6
		}
		if len(s.disc) != 0 || len(s.got) != want {
			t.Fatalf("subscriber %d (%s): disconnects %v, %d publications, want %d", i, s.proto, s.disc, len(s.got), want)
		}
	}
}
