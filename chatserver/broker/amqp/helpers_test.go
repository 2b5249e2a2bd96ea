package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
)

// newBroker returns a broker for top reaching RabbitMQ at rawURL (default:
// the test server), with fast reconnection for tests.
func newBroker(t testing.TB, top testenv.Topology, rawURL string, opts amqp.Options) *amqp.Broker {
	t.Helper()
	if rawURL == "" {
		rawURL = testenv.AMQPURL()
	}
	opts.URL = rawURL
	opts.Exchange, opts.ControlExchange = top.Exchange, top.ControlExchange
	if opts.ReconnectMin == 0 {
		opts.ReconnectMin = 50 * time.Millisecond
		opts.ReconnectMax = 300 * time.Millisecond
	}
	b, err := amqp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
