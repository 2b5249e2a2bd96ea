package node_test

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// The first publications of a fresh channel may reach the node out of order
// (two publishers: offsets are given by the store, broker publishes race).
// Offset 2 arriving first is a gap after the known position 0, filled from
// the store, and the late offset 1 is then a duplicate: every subscriber sees
// 1, 2 once each. Found by chatbench's reconnect scenario, where whole rooms
// missed their first publication.
func TestFirstPublicationsOutOfOrderAreDeliveredInOrder(t *testing.T) {
	ctx := context.Background()
	const ch = "room:fresh"
	n, s, rec := subscribedNode(t, ch)
	var res []store.AppendResult
	for i := 0; i < 2; i++ {
		r, err := s.Append(ctx, ch, &message.Publication{Data: []byte(`{}`)}, store.AppendOptions{HistorySize: 100, HistoryTTL: 3600e9})
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, r)
	}
	n.HandlePublication(ch, res[1].Publication, res[1].Position)
	n.HandlePublication(ch, res[0].Publication, res[0].Position)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.offsets) != 2 || rec.offsets[0] != 1 || rec.offsets[1] != 2 {
		t.Fatalf("delivered %v, want [1 2]", rec.offsets)
	}
}
