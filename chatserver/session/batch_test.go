package session_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// Publications the broker hands over together reach a connection in one
// frame, in order, for both protocols; a subscription still being set up is
// not bypassed (its buffering applies to each).
func TestPublicationsHandedOverTogetherShareAFrame(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, proto := range []string{"json", "protobuf"} {
		t.Run(proto, func(t *testing.T) {
			channel := "open:batch-" + proto
			raw := servertest.DialRaw(t, srv.WS, proto)
			raw.Connect(t, servertest.Token(t, "alice"))
			id := raw.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: channel}})
			if rep := raw.Reply(t, id); rep.Error != nil {
				t.Fatal(rep.Error)
			}
			var pubs []*message.Publication
			var sps []message.StreamPosition
			for off := uint64(1); off <= 5; off++ {
				pubs = append(pubs, &message.Publication{Offset: off, Data: fmt.Appendf(nil, `{"n":%d}`, off)})
				sps = append(sps, message.StreamPosition{Offset: off, Epoch: "e1"})
			}
			srv.Node.HandlePublications(channel, pubs, sps)
			reps, err := raw.Read(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(reps) != 5 {
				t.Fatalf("%d replies in the frame, want 5", len(reps))
			}
			for i, rep := range reps {
				if rep.Push == nil || rep.Push.Pub == nil || rep.Push.Pub.Offset != uint64(i+1) {
					t.Fatalf("reply %d: %+v", i, rep)
				}
			}
		})
	}
}
