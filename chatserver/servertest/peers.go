package servertest

import (
	"testing"

	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/store"
	storememory "github.com/parley-chat/parley/chatserver/store/memory"
)

// sharedStore keeps a store open when one of the servers sharing it stops.
type sharedStore struct{ store.Store }

func (sharedStore) Close() error { return nil }

// Peers starts n servers as replicas of one cluster, in memory: their
// brokers share one memory network and they share one memory store, which
// is closed after the last of them stopped.
func Peers(t testing.TB, cfg config.Config, n int) []*Server {
	t.Helper()
	return PeersWithStore(t, cfg, n, storememory.New(storememory.Options{}))
}

// PeersWithStore is Peers sharing st (closed after the last server stopped).
func PeersWithStore(t testing.TB, cfg config.Config, n int, st store.Store) []*Server {
	t.Helper()
	t.Cleanup(func() { _ = st.Close() }) // registered first: runs after every server stopped
	network := brokermemory.NewNetwork()
	out := make([]*Server, n)
	for i := range out {
		out[i] = Start(t, cfg, network.NewBroker(), sharedStore{st})
	}
	return out
}
