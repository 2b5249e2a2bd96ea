package amqp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/message"
)

// BenchmarkSubscribeChurn measures what a subscriber coming and going costs
// a node that already holds 1000 channels: with one routing key per channel
// every op is a queue.bind plus a queue.unbind round trip; with partitions
// most ops find the partition's key already bound.
func BenchmarkSubscribeChurn(b *testing.B) {
	for _, tc := range []struct {
		name       string
		partitions int
		linger     time.Duration
		flap       bool // the same channel comes and goes (page reloads)
	}{
		{"per-channel", 0, -1, false},
		{"per-channel-linger-new-channels", 0, 10 * time.Second, false},
		{"per-channel-linger-same-channel", 0, 10 * time.Second, true},
		{"partitions-64", 64, -1, false},
		{"partitions-1024", 1024, -1, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			top := testenv.NewTopology(b)
			node := brokertest.Start(b, newBroker(b, top, "", amqp.Options{Partitions: tc.partitions, UnbindLinger: tc.linger}))
			ctx := context.Background()
			held := make([]string, 1000)
			for i := range held {
				held[i] = fmt.Sprintf("held:%d", i)
			}
			if err := node.B.Subscribe(ctx, held...); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ch := fmt.Sprintf("churn:%d", i)
				if tc.flap {
					ch = "churn:flapping"
				}
				if err := node.B.Subscribe(ctx, ch); err != nil {
					b.Fatal(err)
				}
				if err := node.B.Unsubscribe(ctx, ch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSubscribeBatch measures binding 1000 channels in one Subscribe
// call (pipelined binds, one round trip at the end) — what a reconnect does.
func BenchmarkSubscribeBatch(b *testing.B) {
	top := testenv.NewTopology(b)
	node := brokertest.Start(b, newBroker(b, top, "", amqp.Options{}))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		chans := make([]string, 1000)
		for j := range chans {
			chans[j] = fmt.Sprintf("batch:%d:%d", i, j)
		}
		if err := node.B.Subscribe(ctx, chans...); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := node.B.Unsubscribe(ctx, chans...); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkPublish compares one publisher waiting for each confirm with many
// goroutines whose confirms are outstanding together on one channel.
func BenchmarkPublish(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("publishers-%d", par), func(b *testing.B) {
			top := testenv.NewTopology(b)
			node := brokertest.Start(b, newBroker(b, top, "", amqp.Options{}))
			pub := brokertest.Pub(1, "a chat message of a typical size, around a hundred bytes long, with a little metadata")
			sp := message.StreamPosition{Offset: 1, Epoch: "e"}
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := node.B.Publish(context.Background(), "bench:room", pub, sp); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
