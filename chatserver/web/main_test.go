package web_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// Every server these tests start (and its RabbitMQ and PostgreSQL clients)
// must be gone when they end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, servertest.LeakOptions()...) }
