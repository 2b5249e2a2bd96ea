package bench

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"
)

// centrifuge-go waits out ReadTimeout in a goroutine per command even after
// the reply came (client.go sendAsync), so those outlive a closed client by
// design; anything else left running is a leak.
func TestMain(m *testing.M) {
	leakcheck.Main(m, goleak.IgnoreTopFunction("github.com/centrifugal/centrifuge-go.(*Client).sendAsync.func1"))
}
