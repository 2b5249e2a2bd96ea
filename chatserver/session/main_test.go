package session_test

import (
	"testing"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }
