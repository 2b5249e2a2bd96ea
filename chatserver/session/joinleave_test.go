package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"

	brokermemory "github.com/parley-chat/parley/chatserver/broker/memory"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// publishAndSee publishes through c's subscription and waits until every
// watcher received the publication. A connection's pushes arrive in order and
// centrifuge-go runs its handlers in order, so a join or leave queued before
// the publication is in the watcher's channel by then.
func publishAndSee(t *testing.T, pub *servertest.Sub, watchers ...*servertest.Sub) {
	t.Helper()
	if _, err := pub.Publish(ctx(t), []byte(`{"text":"marker"}`)); err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		servertest.Recv(t, w.Pubs, "marker publication")
	}
}

func drainJoins(s *servertest.Sub) (joins, leaves []string) {
	for {
		select {
		case j := <-s.Joins:
			joins = append(joins, j.User)
		case l := <-s.Leaves:
			leaves = append(leaves, l.User)
		default:
			return joins, leaves
		}
	}
}

// Join and leave pushes go only to subscriptions whose subscribe request
// set join_leave (centrifuge-go: SubscriptionConfig.JoinLeave), and only in
// namespaces that enable them.
func TestJoinLeaveOnlyWhenAsked(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			channel := "room:jl-" + proto
			asked := servertest.Subscribe(t, servertest.Connect(t, srv.WS, proto, servertest.Token(t, "asker")), channel, centrifuge.SubscriptionConfig{JoinLeave: true})
			joinOf(t, asked, "asker") // its own join
			silent := servertest.Subscribe(t, servertest.Connect(t, srv.WS, proto, servertest.Token(t, "quiet")), channel, centrifuge.SubscriptionConfig{})
			joinOf(t, asked, "quiet")

			alice := servertest.Connect(t, srv.WS, proto, servertest.Token(t, "alice"))
			as := servertest.Subscribe(t, alice, channel, centrifuge.SubscriptionConfig{})
			joinOf(t, asked, "alice")
			publishAndSee(t, as, asked, silent)
			if joins, leaves := drainJoins(silent); len(joins)+len(leaves) != 0 {
				t.Fatalf("a subscription without join_leave got joins %v leaves %v", joins, leaves)
			}
			if joins, leaves := drainJoins(as); len(joins)+len(leaves) != 0 {
				t.Fatalf("alice did not ask either, got joins %v leaves %v", joins, leaves)
			}

			if err := as.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
			if l := servertest.Recv(t, asked.Leaves, "leave"); l.User != "alice" {
				t.Fatalf("leave of %q", l.User)
			}
			publishAndSee(t, asked, asked, silent)
			if joins, leaves := drainJoins(silent); len(joins)+len(leaves) != 0 {
				t.Fatalf("a subscription without join_leave got joins %v leaves %v", joins, leaves)
			}
		})
	}
	t.Run("namespace without join/leave", func(t *testing.T) {
		// "open" keeps presence but not join/leave: asking changes nothing.
		const channel = "open:jl"
		asked := servertest.Subscribe(t, servertest.Connect(t, srv.WS, "json", servertest.Token(t, "asker")), channel, centrifuge.SubscriptionConfig{JoinLeave: true})
		other := servertest.Subscribe(t, servertest.Connect(t, srv.WS, "protobuf", servertest.Token(t, "bob")), channel, centrifuge.SubscriptionConfig{JoinLeave: true})
		publishAndSee(t, other, asked, other)
		if joins, leaves := drainJoins(asked); len(joins)+len(leaves) != 0 {
			t.Fatalf("joins %v leaves %v in a namespace without join/leave", joins, leaves)
		}
		p, err := asked.Presence(ctx(t))
		if err != nil || len(p.Clients) != 2 {
			t.Fatalf("presence still works: %+v %v", p, err)
		}
	})
}

// slowJoinBroker returns from PublishJoin only after the join had time to
// come back to the node: the subscriber's own join then reaches the session
// before its subscribe reply is written.
type slowJoinBroker struct{ *brokermemory.Broker }

func (b slowJoinBroker) PublishJoin(ctx context.Context, channel string, info *message.ClientInfo) error {
	err := b.Broker.PublishJoin(ctx, channel, info)
	time.Sleep(100 * time.Millisecond)
	return err
}

// A subscription's own join is pushed after its subscribe reply, never
// before: the client must know the subscription before events for it arrive.
func TestJoinPushFollowsSubscribeReply(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), slowJoinBroker{brokermemory.New()}, nil)
	for _, proto := range servertest.Protocols {
		t.Run(proto, func(t *testing.T) {
			channel := "room:order-" + proto
			r := servertest.DialRaw(t, srv.WS, proto)
			r.Connect(t, servertest.Token(t, "alice"))
			id := r.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: channel, JoinLeave: true}})
			replied := false
			for {
				reps, err := r.Read(servertest.Timeout)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				for _, rep := range reps {
					switch {
					case rep.Id == id:
						if rep.Error != nil {
							t.Fatalf("subscribe: %+v", rep.Error)
						}
						replied = true
					case rep.Push != nil && rep.Push.Join != nil:
						if !replied {
							t.Fatal("join push before the subscribe reply")
						}
						if rep.Push.Channel != channel || rep.Push.Join.Info.User != "alice" {
							t.Fatalf("join %+v", rep.Push)
						}
						return
					}
				}
			}
		})
	}
}
