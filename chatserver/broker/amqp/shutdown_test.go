package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
)

// RabbitMQ behind a partition (the connection open, nothing answering) must
// not hold a replica's shutdown: Run returns once its context ends and Close
// returns, each within a couple of seconds, not when heartbeats finally
// notice the dead connection.
func TestShutdownBehindAPartition(t *testing.T) {
	top := testenv.NewTopology(t)
	proxy, err := tcpproxy.New(mustHost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	b := newBroker(t, top, mustProxyURL(t, proxy), amqp.Options{Heartbeat: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx, brokertest.NewRecorder())
	}()
	brokertest.WaitReady(t, b)
	proxy.Stall()
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		_ = proxy.Close() // let it go before the test ends
		<-done
		t.Fatalf("Run returned %s after its context ended", time.Since(start))
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = b.Close()
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs behind the partition")
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
}
