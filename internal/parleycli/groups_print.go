package parleycli

// Text output of the groups, inbox and search commands.

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

func decodeInto(res json.RawMessage, v any) error {
	if err := json.Unmarshal(res, v); err != nil {
		return fmt.Errorf("the server's answer is not what this client expects: %w", err)
	}
	return nil
}

// writer collects the first write error, so printers stay readable.
type writer struct {
	w   io.Writer
	err error
}

func (w *writer) printf(format string, args ...any) {
	if w.err == nil {
		_, w.err = fmt.Fprintf(w.w, format, args...)
	}
}

func printGroup(w io.Writer, res json.RawMessage) error {
	var r struct {
		Group struct {
			Channel, Title, Topic, Owner string
			WhoInvites                   string `json:"who_invites"`
			WhoPosts                     string `json:"who_posts"`
			Members                      int
		}
		Role string
	}
	if err := decodeInto(res, &r); err != nil {
		return err
	}
	g := r.Group
	out := &writer{w: w}
	out.printf("%s %q\n", g.Channel, g.Title)
	if g.Topic != "" {
		out.printf("topic: %s\n", oneLine(g.Topic))
	}
	out.printf("owner: %s, %d members, you are %s\n", g.Owner, g.Members, r.Role)
	out.printf("invites: %s, posts: %s\n", g.WhoInvites, g.WhoPosts)
	return out.err
}

func printMembers(w io.Writer, res json.RawMessage) error {
	var r struct {
		Members []struct {
			User, Role, Name string
			MutedUntil       time.Time `json:"muted_until"`
		}
	}
	if err := decodeInto(res, &r); err != nil {
		return err
	}
	out := &writer{w: w}
	for _, m := range r.Members {
		line := m.User + " " + m.Role
		if m.Name != "" {
			line += fmt.Sprintf(" (%s)", oneLine(m.Name))
		}
		if m.MutedUntil.After(time.Now()) {
			line += " muted until " + m.MutedUntil.Local().Format(time.DateTime)
		}
		out.printf("%s\n", line)
	}
	return out.err
}

func printAudit(w io.Writer, res json.RawMessage) error {
	var r struct {
		Entries []struct {
			Actor, Action, Target string
			Detail                json.RawMessage
			At                    time.Time
		}
	}
	if err := decodeInto(res, &r); err != nil {
		return err
	}
	out := &writer{w: w}
	for _, e := range r.Entries {
		line := fmt.Sprintf("%s %s %s", e.At.Local().Format(time.DateTime), e.Actor, e.Action)
		if e.Target != "" {
			line += " " + e.Target
		}
		if len(e.Detail) > 0 {
			line += " " + string(e.Detail)
		}
		out.printf("%s\n", line)
	}
	return out.err
}

func printInbox(w io.Writer, res json.RawMessage) error {
	var r struct {
		Conversations []struct {
			Channel, Title, Preview string
			LastUser                string `json:"last_user"`
			Unread                  uint64
			Mentions                int
			Muted                   bool
		}
	}
	if err := decodeInto(res, &r); err != nil {
		return err
	}
	out := &writer{w: w}
	for _, c := range r.Conversations {
		name := c.Channel
		if c.Title != "" {
			name += fmt.Sprintf(" %q", c.Title)
		}
		var badges []string
		if c.Unread > 0 {
			badges = append(badges, fmt.Sprintf("%d unread", c.Unread))
		}
		if c.Mentions > 0 {
			badges = append(badges, fmt.Sprintf("%d @", c.Mentions))
		}
		if c.Muted {
			badges = append(badges, "muted")
		}
		line := name
		if len(badges) > 0 {
			line += " [" + strings.Join(badges, ", ") + "]"
		}
		if c.Preview != "" {
			line += fmt.Sprintf(" %s: %s", c.LastUser, oneLine(c.Preview))
		}
		out.printf("%s\n", line)
	}
	return out.err
}

func printHits(w io.Writer, res json.RawMessage) error {
	var r struct {
		Hits []struct {
			Channel, User, Snippet string
			Offset                 uint64
		}
	}
	if err := decodeInto(res, &r); err != nil {
		return err
	}
	out := &writer{w: w}
	for _, h := range r.Hits {
		snippet := strings.NewReplacer("<b>", "", "</b>", "").Replace(h.Snippet)
		out.printf("%s #%d %s: %s\n", h.Channel, h.Offset, h.User, oneLine(snippet))
	}
	return out.err
}
