package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/chatserver/broker"
	"github.com/parley-chat/parley/chatserver/broker/brokertest"
	"github.com/parley-chat/parley/chatserver/broker/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
