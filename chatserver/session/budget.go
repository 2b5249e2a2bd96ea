package session

import (
	"encoding/json"

	"github.com/centrifugal/protocol"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/groups"
	"github.com/parley-chat/parley/chatserver/internal/bucket"
	"github.com/parley-chat/parley/chatserver/node"
)

// Budgets that protect the server from one client. Each is a token bucket
// (internal/bucket): spent by what the client does, recovering at a steady
// rate, so a client that overdoes it is refused for a while and never
// banished for good.
const (
	// MaxErrors is how many error replies a connection may earn at once
	// before it is disconnected as misbehaving (3509); the allowance grows
	// back by ErrorsPerSecond. Only errors the client caused count (see
	// clientFault): the server's own failures and refusals do not.
	MaxErrors       = 1000
	ErrorsPerSecond = 10
	// MaxRefusals is how many commands a connection may have refused
	// (111, over a budget or the publish rate) at once before it is
	// disconnected with 3013, a code the SDKs reconnect after; the allowance
	// grows back by RefusalsPerSecond. A client a little over its rate for
	// as long as it likes only ever sees 111s.
	MaxRefusals       = 1000
	RefusalsPerSecond = 100
)

// budgets are one connection's buckets.
type budgets struct {
	commands *bucket.Bucket // limits.commandCostPerSecond
	user     *bucket.Bucket // shared by the user's connections on this node; set at connect
	publish  *bucket.Bucket // limits.publishesPerSecond: publish, edit, delete, typing
	errors   *bucket.Bucket
	refusals *bucket.Bucket
}

func newBudgets(perSecond, publishesPerSecond int) budgets {
	rate := float64(perSecond)
	return budgets{
		commands: bucket.New(rate, rate*node.BudgetBurstSeconds),
		publish:  bucket.New(float64(publishesPerSecond), float64(publishesPerSecond)),
		errors:   bucket.New(ErrorsPerSecond, MaxErrors),
		refusals: bucket.New(RefusalsPerSecond, MaxRefusals),
	}
}

// charge spends cost from the connection's and the user's budgets, or from
// neither.
func (b *budgets) charge(cost float64) bool {
	if cost <= 0 {
		return true
	}
	if !b.commands.Take(cost) {
		return false
	}
	if !b.user.Take(cost) {
		b.commands.Refund(cost)
		return false
	}
	return true
}

// Costs in budget units: roughly what a command costs the server (queries,
// broker calls, bytes).
const (
	costCheap      = 1 // unsubscribe, presence_stats, refresh, sub_refresh, typing, an unknown rpc
	costSubscribe  = 2 // a broker bind, a position query, presence
	costPresence   = 2
	costPublish    = 2 // a commit and a broker publish
	costRead       = 3 // two statements and a broadcast
	costReceipts   = 2
	historyPerUnit = 100 // history costs 1 more per 100 publications asked for
	unreadPerUnit  = 20  // unread costs 1 more per 20 channels
)

// commandCost is what cmd costs; ping, pong and connect are free (connect
// happens once and has its own limits).
func (s *Session) commandCost(cmd *protocol.Command, ft protocol.FrameType) float64 {
	switch ft {
	case protocol.FrameTypeSubscribe:
		return costSubscribe
	case protocol.FrameTypeUnsubscribe, protocol.FrameTypePresenceStats, protocol.FrameTypeRefresh, protocol.FrameTypeSubRefresh:
		return costCheap
	case protocol.FrameTypePublish:
		return costPublish
	case protocol.FrameTypePresence:
		return costPresence
	case protocol.FrameTypeHistory:
		limit := int(cmd.History.Limit)
		if ns, err := s.n.Authorizer().Namespace(cmd.History.Channel); err == nil && (limit < 0 || limit > ns.History.Size) {
			limit = ns.History.Size
		}
		return 1 + float64(max(limit, 0)/historyPerUnit)
	case protocol.FrameTypeRPC:
		return rpcCost(cmd.Rpc.Method, cmd.Rpc.Data)
	}
	return 0 // connect, ping, pong; send is charged in send
}

func rpcCost(method string, data []byte) float64 {
	if cost, ok := groups.Cost(method); ok {
		return cost
	}
	switch method {
	case "publish", "edit", "delete":
		return costPublish
	case "read":
		return costRead
	case "receipts":
		return costReceipts
	case "unread":
		var req struct {
			Channels []json.RawMessage `json:"channels"`
		}
		_ = json.Unmarshal(data, &req) // a bad request costs the minimum and is refused by the rpc
		return 1 + float64(len(req.Channels)/unreadPerUnit)
	}
	return costCheap
}

// publishRated are the rpc methods limits.publishesPerSecond applies to.
func publishRated(method string) bool {
	return method == "publish" || method == "edit" || method == "delete" || method == "typing"
}

// clientFault reports whether an error reply counts against the client's
// error budget. Failures of the server or its dependencies (100), refusals
// (111, counted as refusals), an expired token (109, the normal refresh
// flow) and an unrecoverable position (112, history was lost) do not.
func clientFault(e *codes.Error) bool {
	switch e.Code {
	case codes.ErrInternal.Code, codes.ErrTooManyRequests.Code, codes.ErrTokenExpired.Code, codes.ErrUnrecoverablePosition.Code:
		return false
	}
	return true
}
