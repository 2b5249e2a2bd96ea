package bench

import (
	"testing"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// centrifuge-go waits out ReadTimeout in a goroutine per command even after
// the reply came (client.go sendAsync), so those outlive a closed client by
// design; anything else left running is a leak.
func TestMain(m *testing.M) {
	leakcheck.Main(m, servertest.LeakOptions()...)
}
