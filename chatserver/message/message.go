// Package message holds the values that travel between the chat server's layers:
// publications with their stream positions, and who published them. Broker and
// store both speak these types so neither needs to import the other, nor the hub.
package message

import "time"

// ClientInfo says who did something: the authenticated user, the connection's
// client ID, and opaque info attached by the token (conn) or subscription (chan).
type ClientInfo struct {
	User     string `json:"user,omitempty"`
	Client   string `json:"client,omitempty"`
	ConnInfo []byte `json:"conn_info,omitempty"`
	ChanInfo []byte `json:"chan_info,omitempty"`
}

// StreamPosition identifies a point in a channel's history stream. Offsets are
// dense and start at 1 for the first publication; Epoch changes only when the
// stream's history was really lost (a store wiped or a channel's history removed),
// so a client holding (offset, epoch) can tell recovery from a silent gap.
type StreamPosition struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// Publication is one message in a channel. Offset is assigned by the store on
// Append; a publication that was never stored (a channel without history, or a
// typing indicator) has Offset 0.
type Publication struct {
	Offset uint64            `json:"offset,omitempty"`
	Data   []byte            `json:"data"`
	Info   *ClientInfo       `json:"info,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	// Time is when the store accepted the publication (Unix milliseconds).
	Time int64 `json:"time,omitempty"`
}

// ReadState is one user's read receipt in one channel.
type ReadState struct {
	Channel    string `json:"channel"`
	LastRead   uint64 `json:"last_read"`
	Unread     uint64 `json:"unread"`
	LastOffset uint64 `json:"last_offset"`
}

// Receipt is how far one user has read one channel (read receipts as others
// see them: "seen by").
type Receipt struct {
	User     string `json:"user"`
	LastRead uint64 `json:"last_read"`
}

// PresenceEntry is one connection present in a channel.
type PresenceEntry struct {
	ClientInfo
	// Seen is when the entry was last refreshed; entries not refreshed within
	// the store's TTL are dropped (a node that died without cleaning up).
	Seen time.Time `json:"-"`
}

// Clone returns a deep copy, so a store or broker can keep a publication
// without sharing its byte slices and map with the caller.
func (p *Publication) Clone() *Publication {
	c := *p
	if p.Data != nil {
		c.Data = append([]byte(nil), p.Data...)
	}
	if p.Info != nil {
		info := p.Info.Clone()
		c.Info = &info
	}
	if p.Tags != nil {
		c.Tags = make(map[string]string, len(p.Tags))
		for k, v := range p.Tags {
			c.Tags[k] = v
		}
	}
	return &c
}

// Clone returns a deep copy of the info.
func (i ClientInfo) Clone() ClientInfo {
	if i.ConnInfo != nil {
		i.ConnInfo = append([]byte(nil), i.ConnInfo...)
	}
	if i.ChanInfo != nil {
		i.ChanInfo = append([]byte(nil), i.ChanInfo...)
	}
	return i
}
