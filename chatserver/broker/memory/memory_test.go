package memory_test

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/message"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestContract(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T, n int) []broker.Broker {
			net := memory.NewNetwork()
			out := make([]broker.Broker, n)
			for i := range out {
				out[i] = net.NewBroker()
			}
			return out
		},
	})
}

// Publications that piled up while the handler was busy are handed over
// together (at most broker.MaxBatch at a time), in order; a lone one alone.
func TestPiledUpPublicationsAreHandedOverTogether(t *testing.T) {
	b := memory.New()
	ctx, cancel := context.WithCancel(context.Background())
	h := brokertest.NewGated()
	done := make(chan error)
	go func() { done <- b.Run(ctx, h) }()
	defer func() { cancel(); <-done; _ = b.Close() }()
	if err := b.Subscribe(ctx, "room:a", "room:b"); err != nil {
		t.Fatal(err)
	}
	pub := func(ch string, off uint64) {
		if err := b.Publish(ctx, ch, &message.Publication{Offset: off, Data: []byte(`{}`)}, message.StreamPosition{Offset: off, Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	pub("room:a", 1)
	<-h.Entered
	for off := uint64(2); off <= 101; off++ {
		pub("room:a", off)
	}
	pub("room:b", 1)
	close(h.Release)
	h.WaitFor(t, "102 publications", func() bool { return len(h.Events("pub", "room:a")) == 101 && len(h.Events("pub", "room:b")) == 1 })
	for i, e := range h.Events("pub", "room:a") {
		if e.Pub.Offset != uint64(i+1) {
			t.Fatalf("publication %d has offset %d", i, e.Pub.Offset)
		}
	}
	if got := h.LargestBatch(); got != broker.MaxBatch {
		t.Fatalf("largest batch %d, want %d (100 piled up)", got, broker.MaxBatch)
	}
}
