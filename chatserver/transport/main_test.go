package transport_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, servertest.LeakOptions()...) }
