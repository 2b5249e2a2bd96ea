package cluster_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// Behind a load balancer without sticky sessions a stream's commands land on
// any replica. Two replicas on the real RabbitMQ and PostgreSQL; every
// emulation request goes to the replica that does not hold the stream, and
// the commands still reach the session, replies on the stream. A session
// that is gone gets 404 from the other replica too.
func TestEmulationAcrossReplicas(t *testing.T) {
	cfg := servertest.Config()
	// 21 publishes in a row on one connection: on a fast run they come
	// faster than the default 20 per second, and this test is about order,
	// not budgets (those have their own tests).
	cfg.Limits.PublishesPerSecond, cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond = 0, 0, 0
	peers := servertest.RealPeers(t, cfg, 2)
	kinds := []struct{ kind, proto string }{{"http_stream", "json"}, {"http_stream", "protobuf"}, {"sse", "json"}}
	for i, k := range kinds {
		t.Run(k.kind+"/"+k.proto, func(t *testing.T) {
			holder, other := peers[i%2], peers[(i+1)%2]
			s := servertest.DialStream(t, nil, holder.HTTP, k.kind, k.proto, servertest.Token(t, fmt.Sprintf("user%d", i)))
			if s.Node != holder.Node.ID() {
				t.Fatalf("connect reply names node %q, want the holder %q", s.Node, holder.Node.ID())
			}
			ch := fmt.Sprintf("room:emu%d", i)
			code, ids := s.Emulate(t, other.HTTP,
				&protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch}},
				&protocol.Command{Publish: &protocol.PublishRequest{Channel: ch, Data: []byte(`{"n":1}`)}})
			if code != http.StatusNoContent {
				t.Fatalf("emulation through the other replica: %d", code)
			}
			if rep := s.Reply(t, ids[0]); rep.Error != nil || rep.Subscribe == nil {
				t.Fatalf("subscribe: %+v", rep)
			}
			if rep := s.Reply(t, ids[1]); rep.Error != nil || rep.Publish == nil {
				t.Fatalf("publish: %+v", rep)
			}
			s.WaitPush(t, "publication", func(p *protocol.Push) bool { return p.Pub != nil && p.Channel == ch })
			// Many requests in a row keep their order on the session.
			for j := range 20 {
				code, ids := s.Emulate(t, other.HTTP, &protocol.Command{Publish: &protocol.PublishRequest{Channel: ch, Data: fmt.Appendf(nil, `{"n":%d}`, j+2)}})
				if code != http.StatusNoContent {
					t.Fatalf("emulation %d: %d", j, code)
				}
				if rep := s.Reply(t, ids[0]); rep.Error != nil {
					t.Fatalf("publish %d: %+v", j, rep)
				}
			}
			s.Close()
			deadline := time.Now().Add(wait)
			for holder.Conns.NumConns() > 0 {
				if time.Now().After(deadline) {
					t.Fatal("the holder still has the closed stream")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The session is gone: the other replica asks the holder, which says so.
			code, _ = s.Emulate(t, other.HTTP, &protocol.Command{Ping: &protocol.PingRequest{}})
			if code != http.StatusNotFound {
				t.Fatalf("emulation to a closed session through the other replica: %d, want 404", code)
			}
		})
	}
}

// A request addressed to a node that is gone waits a bounded time and says
// which node did not answer.
func TestEmulationToAGoneNode(t *testing.T) {
	peers := servertest.RealPeers(t, servertest.Config(), 2)
	peers[1].Conns.SetEmulationWait(500 * time.Millisecond)
	start := time.Now()
	code, body := servertest.PostEmulation(t, nil, peers[1].HTTP, protocol.TypeJSON, "gone-node", "some-session", []byte(`{"id":1,"ping":{}}`))
	if code != http.StatusGatewayTimeout || !strings.Contains(body, `"gone-node" did not answer`) {
		t.Fatalf("%d %q, want 504 naming the node", code, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s, the wait is 500ms", took)
	}
}
