package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/groups"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// Chat semantics exposed as RPC methods (the protocol's rpc command):
//
//	publish {channel, data, key}     idempotent publish: a retry with the same key is stored once
//	typing  {channel}                typing indicator, broadcast, never stored (offset 0, tag type=typing)
//	read     {channel, offset}       read receipt (never moves backwards), shown to the channel as a read event
//	unread   {channels: [...]}       read states and unread counts of the channels the caller may read
//	receipts {channel, limit}        how far members have read the channel (the "seen by" of a room)
//	edit    {channel, offset, data}  author-only edit, broadcast as a publication tagged type=edit, ref=<offset>
//	delete  {channel, offset}        author-only delete, broadcast as a publication tagged type=delete, ref=<offset>
//
// Tags on publications let clients tell chat events apart: "type" is
// "message" (a plain publish carries no tag), "edit", "delete", "typing" or
// "read". Typing and read events have offset 0 and are never stored; a read
// event's data is a ReadEvent ({"reads": [{"user", "last_read"}]}), sent at
// most once per ReceiptInterval per channel and node.
const (
	TagType = "type"
	TagRef  = "ref"
)

// Caller is the connection making an RPC.
type Caller struct {
	Subject auth.Subject
	Info    *message.ClientInfo
	// Subscribed reports whether the caller's connection is subscribed to channel.
	Subscribed func(channel string) bool
}

type rpcPublish struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Key     string          `json:"key"`
	Offset  uint64          `json:"offset"`
}

type rpcUnread struct {
	Channels []string `json:"channels"`
}

type rpcReceipts struct {
	Channel string `json:"channel"`
	Limit   int    `json:"limit"`
}

// Receipts returned by the receipts rpc: DefaultReceipts unless the caller
// asks for a limit, at most MaxReceipts.
const (
	DefaultReceipts = 100
	MaxReceipts     = 1000
)

// RPC runs a chat method and returns its JSON result.
func (n *Node) RPC(ctx context.Context, c Caller, method string, data []byte) ([]byte, error) {
	switch method {
	case "publish", "typing", "read", "edit", "delete":
		var req rpcPublish
		if err := json.Unmarshal(data, &req); err != nil || req.Channel == "" {
			return nil, codes.ErrBadRequest
		}
		switch method {
		case "publish":
			return n.rpcPublish(ctx, c, req)
		case "typing":
			return n.rpcTyping(ctx, c, req)
		case "read":
			return n.rpcRead(ctx, c, req)
		default:
			return n.rpcEdit(ctx, c, method, req)
		}
	case "unread":
		var req rpcUnread
		if err := json.Unmarshal(data, &req); err != nil || len(req.Channels) == 0 || len(req.Channels) > 1000 {
			return nil, codes.ErrBadRequest
		}
		if c.Subject.Anonymous {
			return nil, codes.ErrPermissionDenied
		}
		// Channels the caller may not read are left out: the answer must not
		// tell whether they exist or how many messages they hold.
		readable := make([]string, 0, len(req.Channels))
		for _, ch := range req.Channels {
			if _, err := n.authz.CanRead(c.Subject, ch, c.Subscribed(ch)); err == nil {
				readable = append(readable, ch)
			}
		}
		readable, err := n.groups.Readable(ctx, c.Subject, readable)
		if err != nil {
			return nil, err
		}
		if len(readable) == 0 {
			return json.Marshal(map[string]any{"states": []message.ReadState{}})
		}
		states, err := n.store.ReadStates(ctx, c.Subject.User, readable)
		if err != nil {
			return nil, fmt.Errorf("read states: %w", err)
		}
		return json.Marshal(map[string]any{"states": states})
	case "receipts":
		var req rpcReceipts
		if err := json.Unmarshal(data, &req); err != nil || req.Channel == "" || req.Limit < 0 || req.Limit > MaxReceipts {
			return nil, codes.ErrBadRequest
		}
		return n.rpcReceipts(ctx, c, req)
	}
	if groups.Handles(method) {
		user := c.Subject.User
		if c.Subject.Anonymous {
			user = ""
		}
		return n.groups.RPC(ctx, groups.Caller{User: user}, method, data)
	}
	// Centrifugo answers an rpc without a handler with 108, and the SDKs'
	// test suites expect it (104 is for a command the protocol lacks).
	return nil, codes.ErrNotAvailable
}

func (n *Node) rpcPublish(ctx context.Context, c Caller, req rpcPublish) ([]byte, error) {
	if len(req.Data) == 0 || !json.Valid(req.Data) {
		return nil, codes.ErrBadRequest
	}
	if err := n.authz.CanPublish(c.Subject, req.Channel, c.Subscribed(req.Channel)); err != nil {
		return nil, err
	}
	if err := n.groups.Check(ctx, c.Subject, req.Channel, groups.OpPublish); err != nil {
		return nil, err
	}
	res, err := n.Publish(ctx, req.Channel, req.Data, c.Info, PublishOptions{IdempotencyKey: req.Key})
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"offset": res.Position.Offset, "epoch": res.Position.Epoch, "duplicate": res.Duplicate})
}

func (n *Node) rpcTyping(ctx context.Context, c Caller, req rpcPublish) ([]byte, error) {
	ns, err := n.authz.Namespace(req.Channel)
	if err != nil {
		return nil, err
	}
	if !ns.Typing {
		return nil, codes.ErrNotAvailable
	}
	if err := n.authz.CanPublish(c.Subject, req.Channel, c.Subscribed(req.Channel)); err != nil {
		return nil, err
	}
	if err := n.groups.Check(ctx, c.Subject, req.Channel, groups.OpPublish); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(map[string]string{"user": c.Subject.User})
	if err := n.PublishEphemeral(ctx, req.Channel, data, c.Info, map[string]string{TagType: "typing"}); err != nil {
		return nil, err
	}
	return []byte(`{}`), nil
}

func (n *Node) rpcRead(ctx context.Context, c Caller, req rpcPublish) ([]byte, error) {
	if c.Subject.Anonymous {
		return nil, codes.ErrPermissionDenied
	}
	if err := n.canReadChannel(ctx, c, req.Channel); err != nil {
		return nil, err
	}
	if err := n.store.MarkRead(ctx, req.Channel, c.Subject.User, req.Offset); err != nil {
		return nil, fmt.Errorf("mark read: %w", err)
	}
	// What the store kept (clamped, never back) is what the others see.
	states, err := n.store.ReadStates(ctx, c.Subject.User, []string{req.Channel})
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var last uint64
	if len(states) == 1 {
		last = states[0].LastRead
	}
	if last > 0 {
		n.reads.add(req.Channel, c.Subject.User, last)
	}
	n.groups.Read(ctx, c.Subject.User, req.Channel)
	return json.Marshal(map[string]uint64{"last_read": last})
}

// canReadChannel decides who may send and see read receipts: whoever may
// read the channel's history, or in a namespace without history its subscribers.
func (n *Node) canReadChannel(ctx context.Context, c Caller, channel string) error {
	subscribed := c.Subscribed(channel)
	_, err := n.authz.CanHistory(c.Subject, channel, subscribed)
	if errors.Is(err, codes.ErrNotAvailable) {
		if !subscribed {
			return codes.ErrPermissionDenied
		}
		err = nil
	}
	if err != nil {
		return err
	}
	return n.groups.Check(ctx, c.Subject, channel, groups.OpRead)
}

// rpcReceipts lists how far the channel's members have read it.
func (n *Node) rpcReceipts(ctx context.Context, c Caller, req rpcReceipts) ([]byte, error) {
	if err := n.canReadChannel(ctx, c, req.Channel); err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultReceipts
	}
	receipts, err := n.store.Receipts(ctx, req.Channel, limit)
	if err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	return json.Marshal(map[string]any{"receipts": receipts})
}

// rpcEdit handles edit and delete: only the author of the original
// publication may do either, and the result is a new publication referencing
// the original offset, stored and broadcast like any other.
func (n *Node) rpcEdit(ctx context.Context, c Caller, method string, req rpcPublish) ([]byte, error) {
	if req.Offset == 0 {
		return nil, codes.ErrBadRequest
	}
	if method == "edit" && (len(req.Data) == 0 || !json.Valid(req.Data)) {
		return nil, codes.ErrBadRequest
	}
	if err := n.authz.CanPublish(c.Subject, req.Channel, c.Subscribed(req.Channel)); err != nil {
		return nil, err
	}
	if err := n.groups.Check(ctx, c.Subject, req.Channel, groups.OpPublish); err != nil {
		return nil, err
	}
	pos, err := n.store.Position(ctx, req.Channel)
	if err != nil {
		return nil, fmt.Errorf("position: %w", err)
	}
	pubs, _, err := n.store.History(ctx, req.Channel, store.HistoryOptions{
		Since: &message.StreamPosition{Offset: req.Offset - 1, Epoch: pos.Epoch}, Limit: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("read original: %w", err)
	}
	if len(pubs) == 0 || pubs[0].Offset != req.Offset {
		return nil, codes.ErrNotAvailable // gone from history (or never existed)
	}
	orig := pubs[0]
	author := orig.Info != nil && orig.Info.User == c.Subject.User && c.Subject.User != ""
	// A group's admins delete anyone's message (never edit it).
	moderated := !author && method == "delete" && n.groups.CanModerate(ctx, c.Subject.User, req.Channel)
	if !author && !moderated {
		return nil, codes.ErrPermissionDenied
	}
	if orig.Tags[TagType] == "edit" || orig.Tags[TagType] == "delete" {
		return nil, codes.ErrBadRequest // edit the message, not an edit of it
	}
	data := req.Data
	if method == "delete" {
		data = []byte(`{"deleted":true}`)
	}
	res, err := n.Publish(ctx, req.Channel, data, c.Info, PublishOptions{
		IdempotencyKey: req.Key,
		Tags:           map[string]string{TagType: method, TagRef: itoa(req.Offset)},
	})
	if err != nil {
		return nil, err
	}
	if moderated {
		var victim string
		if orig.Info != nil {
			victim = orig.Info.User
		}
		n.groups.RecordDelete(ctx, c.Subject.User, req.Channel, victim, req.Offset)
	}
	return json.Marshal(map[string]any{"offset": res.Position.Offset, "epoch": res.Position.Epoch})
}
