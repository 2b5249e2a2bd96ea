package memory_test

import (
	"testing"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/store"
	"github.com/parley-chat/parley/chatserver/store/memory"
	"github.com/parley-chat/parley/chatserver/store/storetest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) store.Store {
			return memory.New(memory.Options{PresenceTTL: opts.PresenceTTL})
		},
	})
}
