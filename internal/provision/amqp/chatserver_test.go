package amqp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/broker"
	chatamqp "github.com/parley-chat/parley/chatserver/broker/amqp"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/internal/testenv"
)

// The chat server's own RabbitMQ broker (chatserver/broker/amqp), run with
// nothing but a tenant's URI: proof that the permissions EnsureTenant gives
// are enough for everything a chat server does, not only for the pattern
// re-enacted in isolation_test.go. Test code only: the operator's
// production code never imports the chat server beyond its config.

func tenantBroker(t testing.TB, ten Tenant, uri string) broker.Broker {
	t.Helper()
	b, err := chatamqp.New(chatamqp.Options{
		URL:                uri,
		Exchange:           ten.Topology.Exchange,
		ControlExchange:    ten.Topology.ControlExchange,
		DeadLetterExchange: ten.Topology.DeadLetterExchange,
		ReconnectMin:       50 * time.Millisecond,
		ReconnectMax:       300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestChatServerBrokerContractWithTenantCredentials(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T, n int) []broker.Broker {
			ten := newTenant(t)
			res := ensureTenant(t, ten, "pw-"+ten.VHost)
			out := make([]broker.Broker, n)
			for i := range out {
				out[i] = tenantBroker(t, ten, res.URI)
			}
			return out
		},
	})
}

// writeConfigFile writes s where a pod would mount it.
func writeConfigFile(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestChatServerReachesItsTenantOverTLSWithBrokerCAFile(t *testing.T) {
	ca := testenv.NewCA(t)
	ten := newTenant(t)
	res, err := (&Client{}).EnsureTenant(ctxT(t), tlsBackend(t, ca), ten, "pw-tls")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Broker{
		Type:               "amqp",
		URLFile:            writeConfigFile(t, "url", res.URI),
		Exchange:           ten.Topology.Exchange,
		ControlExchange:    ten.Topology.ControlExchange,
		DeadLetterExchange: ten.Topology.DeadLetterExchange,
		CAFile:             ca.WriteCertFile(t),
	}
	b, err := chatamqp.Open(cfg, "pod-0", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Ready round-trips a probe through its queue: TLS, login, vhost,
	// passive checks, queue, bindings, publish and consume all worked.
	brokertest.Start(t, b)

	// Trusting another CA, the same server never becomes ready.
	cfg.CAFile = testenv.NewCA(t).WriteCertFile(t)
	wrong, err := chatamqp.Open(cfg, "pod-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = wrong.Run(ctx, brokertest.NewRecorder())
	}()
	t.Cleanup(func() {
		cancel()
		_ = wrong.Close()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		err := wrong.Ready(rctx)
		rcancel()
		if err == nil {
			t.Fatal("the chat server became ready trusting a CA that did not sign the broker's certificate")
		}
		if strings.Contains(err.Error(), "certificate") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready, but not for the certificate: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
