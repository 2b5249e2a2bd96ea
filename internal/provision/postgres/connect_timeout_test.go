package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testenv"
)

// TestConnectTimeoutEndsACallToAServerThatNeverAnswers: a PostgreSQL that
// accepts connections and never answers the startup message holds a call
// for ConnectTimeout, not for the whole call's deadline.
func TestConnectTimeoutEndsACallToAServerThatNeverAnswers(t *testing.T) {
	hole := testenv.Blackhole(t)
	c := &Client{ConnectTimeout: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Ensure(ctx, Admin{URI: "postgres://postgres@" + hole + "/postgres?sslmode=disable"}, DatabaseFor("a", "b"), "secret")
	took := time.Since(start)
	if err == nil || ReasonOf(err) != ReasonUnreachable {
		t.Errorf("Ensure: %v (reason %s); want Unreachable", err, ReasonOf(err))
	}
	if took > 3*time.Second {
		t.Errorf("Ensure took %s with a 300ms connect timeout and a 20s deadline", took)
	}
}
