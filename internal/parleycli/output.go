package parleycli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/centrifugal/centrifuge-go"
)

// Tags the chat server puts on publications (chatserver/node/chat.go).
const (
	tagType = "type"
	tagRef  = "ref"
)

// Event is one line of --json output.
type Event struct {
	// Type is message, edit, delete, typing, read (data: {"reads": [{user,
	// last_read}]}), join, leave or sent.
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset,omitempty"`
	// Ref is the offset an edit or delete refers to.
	Ref    uint64            `json:"ref,omitempty"`
	User   string            `json:"user,omitempty"`
	Client string            `json:"client,omitempty"`
	Data   json.RawMessage   `json:"data,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	// Text is data.text when the data is a chat message ({"text": "..."}).
	Text string `json:"text,omitempty"`
	// Duplicate marks a "sent" whose idempotency key had already been stored.
	Duplicate bool `json:"duplicate,omitempty"`
}

// publicationEvent classifies a publication by its tags.
func publicationEvent(channel string, p centrifuge.Publication) Event {
	e := Event{Type: "message", Channel: channel, Offset: p.Offset, Tags: p.Tags}
	if json.Valid(p.Data) {
		e.Data = json.RawMessage(p.Data)
	} else {
		// Not JSON (a protobuf-era publisher): keep it printable.
		e.Data, _ = json.Marshal(string(p.Data))
	}
	if p.Info != nil {
		e.User, e.Client = p.Info.User, p.Info.Client
	}
	switch t := p.Tags[tagType]; t {
	case "edit", "delete", "typing", "read":
		e.Type = t
	}
	if ref, err := strconv.ParseUint(p.Tags[tagRef], 10, 64); err == nil {
		e.Ref = ref
	}
	var msg struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(p.Data, &msg) == nil {
		e.Text = msg.Text
	}
	return e
}

// printer writes events as JSON lines or as text, one at a time.
type printer struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	err  error
}

func (p *printer) print(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	var line string
	if p.json {
		b, err := json.Marshal(e)
		if err != nil {
			p.err = err
			return
		}
		line = string(b)
	} else {
		line = textLine(e)
		if line == "" {
			return
		}
	}
	_, p.err = fmt.Fprintln(p.w, line)
}

// failed is the first write error, read under the lock the callbacks
// print under (live events arrive on the SDK's goroutine).
func (p *printer) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func who(e Event) string {
	if e.User != "" {
		return e.User
	}
	if e.Client == "" {
		return "server"
	}
	return "anonymous"
}

func body(e Event) string {
	if e.Text != "" {
		return oneLine(e.Text)
	}
	return string(e.Data)
}

// oneLine keeps a message on its line so text output stays one event per line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", "\n", "\n", "\n  ", "\r", " ").Replace(s)
}

// textLine renders an event for a person; typing and read receipts are not shown.
func textLine(e Event) string {
	switch e.Type {
	case "message":
		return fmt.Sprintf("#%d %s: %s", e.Offset, who(e), body(e))
	case "edit":
		return fmt.Sprintf("#%d %s edited #%d: %s", e.Offset, who(e), e.Ref, body(e))
	case "delete":
		return fmt.Sprintf("#%d %s deleted #%d", e.Offset, who(e), e.Ref)
	case "join":
		return fmt.Sprintf("* %s joined", who(e))
	case "leave":
		return fmt.Sprintf("* %s left", who(e))
	}
	return ""
}
