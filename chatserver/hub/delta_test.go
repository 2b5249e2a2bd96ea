package hub_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/centrifugal/protocol"
	fossil "github.com/shadowspore/fossil-delta"

	"github.com/parley-chat/parley/chatserver/hub"
)

// deltaSink is a subscriber with a delta subscription: it keeps the base
// its client would keep and rebuilds every publication from the wire.
type deltaSink struct {
	sink
	mu    sync.Mutex
	prev  []byte
	wire  [][]byte
	built []string
}

func (d *deltaSink) WantsDelta(string) bool { return true }
func (d *deltaSink) DeliverPublicationDelta(_ string, pub *protocol.Publication, delta *hub.Delta) {
	d.mu.Lock()
	defer d.mu.Unlock()
	data, err := delta.Encode(protocol.TypeProtobuf, d.prev)
	if err != nil {
		panic(err)
	}
	var rep protocol.Reply
	if err := rep.UnmarshalCF(data); err != nil {
		panic(err)
	}
	got := rep.Push.Pub.Data
	if rep.Push.Pub.Delta {
		if got, err = fossil.Apply(d.prev, got); err != nil {
			panic(err)
		}
	}
	d.prev = pub.Data
	d.wire = append(d.wire, data)
	d.built = append(d.built, string(got))
}

// Subscribers with the same base share one encoded delta (computed once per
// broadcast, also across a big room's parallel parts), and each rebuilds the
// publication exactly.
func TestDeltaEncodedOncePerBase(t *testing.T) {
	h := hub.New()
	subs := make([]*deltaSink, 600) // split into parallel parts
	for i := range subs {
		subs[i] = &deltaSink{sink: sink{id: fmt.Sprint(i), proto: protocol.TypeProtobuf}}
		h.AddSub("room:d", subs[i])
	}
	text := strings.Repeat("much the same ", 50)
	for i := range 3 {
		h.BroadcastPublication("room:d", &protocol.Publication{Data: fmt.Appendf(nil, `{"i":%d,"t":%q}`, i, text), Offset: uint64(i + 1)})
	}
	for i, s := range subs {
		if len(s.built) != 3 {
			t.Fatalf("subscriber %d got %d", i, len(s.built))
		}
		for j, b := range s.built {
			if want := fmt.Sprintf(`{"i":%d,"t":%q}`, j, text); b != want {
				t.Fatalf("subscriber %d publication %d rebuilt wrong", i, j)
			}
		}
		if unsafe.SliceData(s.wire[2]) != unsafe.SliceData(subs[0].wire[2]) {
			t.Fatalf("subscriber %d got its own encoding of the delta", i)
		}
		if len(s.wire[2]) >= len(s.wire[0]) {
			t.Fatalf("delta %d bytes, full %d", len(s.wire[2]), len(s.wire[0]))
		}
	}
}
