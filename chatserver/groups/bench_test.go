package groups_test

import (
	"fmt"
	"testing"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/servertest"
)

// BenchmarkPublish compares a publish in a plain room with one in a group
// of 1 and of 200 members (membership check, inbox update, search index,
// one inbox push per member), on RabbitMQ and PostgreSQL.
//
//	go test ./groups -run '^$' -bench Publish -benchtime 200x
func BenchmarkPublish(b *testing.B) {
	cfg := servertest.Config()
	cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond, cfg.Limits.PublishesPerSecond = 0, 0, 1_000_000
	cfg.Groups.InvitesPerHour = 1_000_000
	srv := servertest.RealPeers(b, cfg, 1)[0]
	r := servertest.DialRaw(b, srv.WS, "json")
	r.Connect(b, servertest.Token(b, "alice"))
	call := func(method, data string) {
		rep := r.Reply(b, r.Command(b, &protocol.Command{Rpc: &protocol.RPCRequest{Method: method, Data: []byte(data)}}))
		if rep.Error != nil {
			b.Fatalf("%s: %v", method, rep.Error)
		}
	}
	for _, members := range []int{0, 1, 200} {
		channel := "room:bench"
		if members > 0 {
			channel = fmt.Sprintf("grp:bench%d", members)
			call("group.create", fmt.Sprintf(`{"id":"bench%d"}`, members))
			for i := 1; i < members; i++ {
				call("group.add", fmt.Sprintf(`{"channel":%q,"user":"m%d"}`, channel, i))
			}
		} else {
			if rep := r.Reply(b, r.Command(b, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: channel}})); rep.Error != nil {
				b.Fatal(rep.Error)
			}
		}
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				call("publish", fmt.Sprintf(`{"channel":%q,"data":{"text":"message %d about the quarterly report"}}`, channel, i))
			}
		})
	}
}
