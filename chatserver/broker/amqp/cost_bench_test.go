package amqp_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/chatserver/internal/procstat"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
)

// BenchmarkRabbitMQCost measures what RabbitMQ itself spends (beam.smp CPU)
// per publication routed the way Parley routes many small rooms: two node
// queues each bound to the same 1000 room keys, confirmed publishes with up
// to 64 outstanding, consumers acknowledging 64 at a time. It compares the
// exchange kind (topic, what Parley declared so far, against direct) and the
// message shape (Parley's header table against the same fields in the body).
func BenchmarkRabbitMQCost(b *testing.B) {
	for _, c := range []rabbitCostCase{
		{"topic/headers", "topic", true, 2, true},
		{"topic/body-only", "topic", false, 2, true},
		{"direct/headers", "direct", true, 2, true},
		{"direct/body-only", "direct", false, 2, true},
		// Where the rest goes: one queue instead of two, no confirms.
		{"direct/headers/one-queue", "direct", true, 1, true},
		{"direct/headers/no-confirms", "direct", true, 2, false},
		// Directory routing with two replicas: the room key is bound
		// nowhere, the message names the other replica's queue in CC.
		{"direct/headers/directory-cc", "direct", true, 2, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchRabbitCost(b, c) })
	}
}

type rabbitCostCase struct {
	name    string
	kind    string
	headers bool
	queues  int
	confirm bool
}

func benchRabbitCost(b *testing.B, c rabbitCostCase) {
	kind, headers, queues := c.kind, c.headers, c.queues
	conn, err := amqp091.Dial(testenv.AMQPURL())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	ex := testenv.Name("parley.cost")
	if err := ch.ExchangeDeclare(ex, kind, false, true, false, false, nil); err != nil {
		b.Fatal(err)
	}
	const rooms = 1000
	keys := make([]string, rooms)
	for i := range keys {
		keys[i] = fmt.Sprintf("c.%032x", i)
	}
	done := make(chan struct{})
	defer close(done)
	received := make(chan struct{}, 1<<16)
	directory := strings.HasSuffix(c.name, "directory-cc")
	for q := range queues {
		qn, err := ch.QueueDeclare("", false, true, true, false, amqp091.Table{"x-queue-type": "classic"})
		if err != nil {
			b.Fatal(err)
		}
		if directory {
			// Only the other replica's queue receives: the publisher's own
			// subscribers got the publication at commit.
			if q == 1 {
				if err := ch.QueueBind(qn.Name, "node.other", ex, false, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		for i, k := range keys {
			if directory {
				break
			}
			// Pipelined; the last waits, so every bind is in place before a
			// publish on another channel.
			if err := ch.QueueBind(qn.Name, k, ex, i < len(keys)-1, nil); err != nil {
				b.Fatal(err)
			}
		}
		cch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := cch.Qos(1000, 0, false); err != nil {
			b.Fatal(err)
		}
		ds, err := cch.Consume(qn.Name, fmt.Sprint("c", q), false, true, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			n := 0
			for {
				select {
				case <-done:
					return
				case d, ok := <-ds:
					if !ok {
						return
					}
					if n++; n%64 == 0 {
						_ = d.Ack(true)
					}
					received <- struct{}{}
				}
			}
		}()
	}
	pch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if c.confirm {
		if err := pch.Confirm(false); err != nil {
			b.Fatal(err)
		}
	}
	body := make([]byte, 160)
	msg := func(i int) amqp091.Publishing {
		m := amqp091.Publishing{Type: "publication", ContentType: "application/x-protobuf", DeliveryMode: amqp091.Transient, Body: body}
		if headers {
			m.Headers = amqp091.Table{"parley-channel": "bench:room-" + fmt.Sprint(i%rooms), "parley-epoch": "abcdef", "parley-offset": int64(i)}
		}
		if directory {
			m.Headers["CC"] = []any{"node.other"}
		}
		return m
	}
	ctx := context.Background()
	var inflight []*amqp091.DeferredConfirmation
	rng := rand.New(rand.NewPCG(1, 2))
	cpu0 := procstat.CPU("beam.smp")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, ex, keys[rng.IntN(rooms)], false, false, msg(i))
		if err != nil {
			b.Fatal(err)
		}
		if !c.confirm {
			continue
		}
		if inflight = append(inflight, dc); len(inflight) == 64 {
			for _, dc := range inflight {
				if ok, err := dc.WaitContext(ctx); !ok || err != nil {
					b.Fatal("not confirmed", err)
				}
			}
			inflight = inflight[:0]
		}
	}
	for _, dc := range inflight {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			b.Fatal("not confirmed", err)
		}
	}
	deliveries := queues * b.N
	if directory {
		deliveries = b.N
	}
	deadline := time.After(30 * time.Second)
	for range deliveries {
		select {
		case <-received:
		case <-deadline:
			b.Fatal("deliveries did not arrive")
		}
	}
	b.StopTimer()
	b.ReportMetric((procstat.CPU("beam.smp")-cpu0).Seconds()*1e6/float64(b.N), "rabbit-cpu-µs/pub")
}
