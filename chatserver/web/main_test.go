package web_test

import (
	"testing"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// Every server these tests start (and its RabbitMQ and PostgreSQL clients)
// must be gone when they end.
func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }
