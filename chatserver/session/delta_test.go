package session_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// Delta compression as the SDKs ask for it (subscribe delta "fossil"): a
// namespace that allows it answers delta: true and sends each publication
// after the first as a fossil delta against the previous one; the SDK
// rebuilds the same data, in both wire formats, live and from recovery.
func TestFossilDeltas(t *testing.T) {
	cfg := servertest.Config()
	for i := range cfg.Namespaces {
		if cfg.Namespaces[i].Name == "room" {
			cfg.Namespaces[i].AllowedDeltaTypes = []string{"fossil"}
		}
	}
	srv := servertest.Start(t, cfg, nil, nil)
	body := strings.Repeat("the same long text in every message ", 20)
	msg := func(i int) []byte { return fmt.Appendf(nil, `{"n":%d,"text":%q}`, i, body) }

	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			ch := "room:delta-" + proto
			c := servertest.Connect(t, srv.WS, proto, servertest.Token(t, "alice"))
			sub := servertest.Subscribe(t, c, ch, centrifuge.SubscriptionConfig{Delta: centrifuge.DeltaTypeFossil, Recoverable: true})
			raw := servertest.DialRaw(t, srv.WS, proto)
			raw.Connect(t, servertest.Token(t, "bob"))
			id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: ch, Delta: "fossil"}})
			if rep := raw.Reply(t, id); rep.Error != nil || !rep.Subscribe.Delta {
				t.Fatalf("subscribe with delta: %+v", rep)
			}
			for i := range 5 {
				if _, err := srv.Node.Publish(ctx(t), ch, msg(i), nil, nodePublishOptions()); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 5 {
				if p := servertest.Recv(t, sub.Pubs, "publication"); string(p.Data) != string(msg(i)) {
					t.Fatalf("publication %d: %s", i, p.Data)
				}
			}
			// On the wire: the first in full, the others as deltas much smaller than the data.
			var pubs []*protocol.Publication
			for len(pubs) < 5 {
				reps, err := raw.Read(servertest.Timeout)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range reps {
					if r.Push != nil && r.Push.Pub != nil {
						pubs = append(pubs, r.Push.Pub)
					}
				}
			}
			if pubs[0].Delta {
				t.Fatal("the first publication after subscribing must be full")
			}
			for _, p := range pubs[1:] {
				if !p.Delta || len(p.Data) > len(msg(0))/4 {
					t.Fatalf("delta=%v, %d bytes for %d of data", p.Delta, len(p.Data), len(msg(0)))
				}
			}
			if proto == "json" {
				var s string
				if err := json.Unmarshal(pubs[0].Data, &s); err != nil || s != string(msg(0)) {
					t.Fatalf("JSON delta mode sends data as a JSON string: %s (%v)", pubs[0].Data, err)
				}
			}
			// Recovery: a new subscription from offset 2 rebuilds 3..5.
			c2 := servertest.Connect(t, srv.WS, proto, servertest.Token(t, "carol"))
			epoch := historyEpoch(t, c, ch)
			sub2 := servertest.NewSub(t, c2, ch, centrifuge.SubscriptionConfig{Delta: centrifuge.DeltaTypeFossil, Recoverable: true,
				GetState: func(centrifuge.SubscriptionGetStateEvent) (centrifuge.StreamPosition, error) {
					return centrifuge.StreamPosition{Offset: 2, Epoch: epoch}, nil
				}})
			if err := sub2.Subscribe(); err != nil {
				t.Fatal(err)
			}
			for i := 2; i < 5; i++ {
				if p := servertest.Recv(t, sub2.Pubs, "recovered publication"); string(p.Data) != string(msg(i)) {
					t.Fatalf("recovered %d: %s", i, p.Data)
				}
			}
			if _, err := srv.Node.Publish(ctx(t), ch, msg(5), nil, nodePublishOptions()); err != nil {
				t.Fatal(err)
			}
			if p := servertest.Recv(t, sub2.Pubs, "live after recovery"); string(p.Data) != string(msg(5)) {
				t.Fatalf("live after recovery: %s", p.Data)
			}
		})
	}

	t.Run("not allowed in the namespace", func(t *testing.T) {
		raw := servertest.DialRaw(t, srv.WS, "json")
		raw.Connect(t, servertest.Token(t, "dave"))
		id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "open:nodelta", Delta: "fossil"}})
		if rep := raw.Reply(t, id); rep.Error != nil || rep.Subscribe.Delta {
			t.Fatalf("delta in a namespace without it: %+v", rep)
		}
		id = raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "room:x", Delta: "xdelta"}})
		if rep := raw.Reply(t, id); rep.Error == nil || rep.Error.Code != 107 {
			t.Fatalf("unknown delta type: %+v", rep)
		}
	})
}

func historyEpoch(t *testing.T, c *centrifuge.Client, ch string) string {
	t.Helper()
	h, err := c.History(ctx(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	return h.Epoch
}
