package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testenv"
)

// TestConnectTimeoutEndsACallToAServerThatNeverAnswers: a broker that
// accepts connections and never answers holds a call for ConnectTimeout,
// not for the whole call's deadline, over AMQP and over the management API.
func TestConnectTimeoutEndsACallToAServerThatNeverAnswers(t *testing.T) {
	hole := testenv.Blackhole(t)
	c := &Client{ConnectTimeout: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for what, call := range map[string]func() error{
		"Declare (AMQP handshake)": func() error {
			_, err := c.Declare(ctx, "amqp://guest:guest@"+hole+"/", TopologyFor("a", "b"))
			return err
		},
		"EnsureTenant (management API read)": func() error {
			_, err := c.EnsureTenant(ctx, Backend{URI: "amqp://guest:guest@" + hole + "/", ManagementURI: "http://" + hole},
				Tenant{VHost: "parley.a.b", User: "parley.a.b", Owner: "a/b", Topology: TopologyFor("a", "b")}, "secret")
			return err
		},
	} {
		start := time.Now()
		err := call()
		took := time.Since(start)
		if err == nil || ReasonOf(err) != ReasonUnreachable {
			t.Errorf("%s: %v (reason %s); want Unreachable", what, err, ReasonOf(err))
		}
		if took > 3*time.Second {
			t.Errorf("%s took %s with a 300ms connect timeout and a 20s deadline", what, took)
		}
	}
}
