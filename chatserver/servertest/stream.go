package servertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/centrifugal/protocol/cfjson"
)

// Stream is a hand-driven client of a streaming transport with
// bidirectional emulation: kind "http_stream" or "sse", proto "json" or
// "protobuf" (http_stream only). Replies and pushes arrive on the stream;
// commands after connect go to /emulation of any replica.
type Stream struct {
	Kind    string
	Proto   protocol.Type
	Client  *http.Client
	Resp    *http.Response
	Session string
	Node    string

	replies chan *protocol.Reply
	done    chan struct{}
	cancel  context.CancelFunc
	id      uint32
	// held are pushes Reply read past while waiting; Next returns them first.
	held []*protocol.Reply
}

// StreamURL is the path of kind on base.
func StreamURL(base, kind string) string { return base + "/connection/" + kind }

// EncodeCommands encodes cmds as one transport frame of proto.
func EncodeCommands(t testing.TB, proto protocol.Type, cmds ...*protocol.Command) []byte {
	t.Helper()
	var frame []byte
	for i, cmd := range cmds {
		if proto == protocol.TypeJSON {
			if i > 0 {
				frame = append(frame, '\n')
			}
			frame = cmd.AppendJSON(frame)
			continue
		}
		data, err := protocol.NewProtobufCommandEncoder().Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		frame = append(frame, data...)
	}
	return frame
}

// OpenStream sends the connect frame and returns the stream once the
// response headers arrived (any status: check Resp.StatusCode).
func OpenStream(t testing.TB, client *http.Client, base, kind, proto string, connect []byte) *Stream {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	s := &Stream{Kind: kind, Proto: protocol.TypeJSON, Client: client, replies: make(chan *protocol.Reply, 1024), done: make(chan struct{})}
	if proto == "protobuf" {
		s.Proto = protocol.TypeProtobuf
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var req *http.Request
	var err error
	if kind == "sse" {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, StreamURL(base, kind)+"?cf_connect="+url.QueryEscape(string(connect)), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, StreamURL(base, kind), bytes.NewReader(connect))
		if s.Proto == protocol.TypeProtobuf {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open %s: %v", kind, err)
	}
	s.Resp = resp
	t.Cleanup(s.Close)
	go s.read()
	return s
}

// DialStream opens a stream and connects with token, recording the
// emulation session and node of the connect reply.
func DialStream(t testing.TB, client *http.Client, base, kind, proto, token string) *Stream {
	t.Helper()
	p := protocol.TypeJSON
	if proto == "protobuf" {
		p = protocol.TypeProtobuf
	}
	s := OpenStream(t, client, base, kind, proto, EncodeCommands(t, p, &protocol.Command{Id: 1, Connect: &protocol.ConnectRequest{Token: token}}))
	s.id = 1
	if s.Resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(s.Resp.Body)
		t.Fatalf("open %s: %d %s", kind, s.Resp.StatusCode, body)
	}
	rep := s.Reply(t, 1)
	if rep.Error != nil || rep.Connect == nil {
		t.Fatalf("connect: %+v", rep)
	}
	if rep.Connect.Session == "" || rep.Connect.Node == "" {
		t.Fatalf("connect reply without emulation session or node: %+v", rep.Connect)
	}
	s.Session, s.Node = rep.Connect.Session, rep.Connect.Node
	return s
}

// read decodes the stream's frames until it ends.
func (s *Stream) read() {
	defer close(s.done)
	br := bufio.NewReader(s.Resp.Body)
	for {
		var msg []byte
		switch {
		case s.Proto == protocol.TypeProtobuf:
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return
			}
			msg = make([]byte, n)
			if _, err := io.ReadFull(br, msg); err != nil {
				return
			}
		default:
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			line = bytes.TrimRight(line, "\r\n")
			if s.Kind == "sse" {
				if !bytes.HasPrefix(line, []byte("data: ")) {
					continue // the preamble and the blank line ending each event
				}
				line = line[len("data: "):]
			}
			if len(line) == 0 {
				continue
			}
			msg = line
		}
		rep := &protocol.Reply{}
		var err error
		if s.Proto == protocol.TypeProtobuf {
			err = rep.UnmarshalCF(msg)
		} else {
			err = cfjson.Unmarshal(msg, rep, 0)
		}
		if err != nil {
			return
		}
		s.replies <- rep
	}
}

// Next returns the next reply or push, or nil once the stream ended or d passed.
func (s *Stream) Next(d time.Duration) *protocol.Reply {
	if len(s.held) > 0 {
		r := s.held[0]
		s.held = s.held[1:]
		return r
	}
	select {
	case r := <-s.replies:
		return r
	case <-time.After(d):
		return nil
	case <-s.done:
		select {
		case r := <-s.replies:
			return r
		default:
			return nil
		}
	}
}

// Reply waits for the reply to id; pushes that come before it are kept
// for Next and WaitPush, other replies skipped.
func (s *Stream) Reply(t testing.TB, id uint32) *protocol.Reply {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	var held []*protocol.Reply
	defer func() { s.held = append(held, s.held...) }()
	for time.Now().Before(deadline) {
		r := s.Next(time.Until(deadline))
		if r == nil {
			break
		}
		if r.Id == id {
			return r
		}
		if r.Push != nil {
			held = append(held, r)
		}
	}
	t.Fatalf("no reply to %d on the %s stream", id, s.Kind)
	return nil
}

// WaitPush waits for a push that match accepts.
func (s *Stream) WaitPush(t testing.TB, what string, match func(*protocol.Push) bool) *protocol.Push {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for time.Now().Before(deadline) {
		r := s.Next(time.Until(deadline))
		if r == nil {
			break
		}
		if r.Push != nil && match(r.Push) {
			return r.Push
		}
	}
	t.Fatalf("no %s push on the %s stream", what, s.Kind)
	return nil
}

// WaitEnd waits for the server to end the stream and returns the code of
// the disconnect push it sent last (0: none).
func (s *Stream) WaitEnd(t testing.TB) uint32 {
	t.Helper()
	var code uint32
	deadline := time.After(Timeout)
	for {
		select {
		case r := <-s.replies:
			if r.Push != nil && r.Push.Disconnect != nil {
				code = r.Push.Disconnect.Code
			}
		case <-s.done:
			for {
				select {
				case r := <-s.replies:
					if r.Push != nil && r.Push.Disconnect != nil {
						code = r.Push.Disconnect.Code
					}
				default:
					return code
				}
			}
		case <-deadline:
			t.Fatalf("the %s stream did not end", s.Kind)
		}
	}
}

// Emulate sends cmds (ids assigned when 0) to base's /emulation, addressed
// to this stream's session, and returns the HTTP status and the ids.
func (s *Stream) Emulate(t testing.TB, base string, cmds ...*protocol.Command) (int, []uint32) {
	t.Helper()
	ids := make([]uint32, 0, len(cmds))
	for _, c := range cmds {
		if c.Id == 0 && c.Send == nil && !isPong(c) {
			s.id++
			c.Id = s.id
		}
		ids = append(ids, c.Id)
	}
	code, body := PostEmulation(t, s.Client, base, s.Proto, s.Node, s.Session, EncodeCommands(t, s.Proto, cmds...))
	if code >= 500 {
		t.Logf("emulation answered %d: %s", code, body)
	}
	return code, ids
}

func isPong(c *protocol.Command) bool {
	return c.Connect == nil && c.Subscribe == nil && c.Unsubscribe == nil && c.Publish == nil && c.Presence == nil &&
		c.PresenceStats == nil && c.History == nil && c.Rpc == nil && c.Refresh == nil && c.SubRefresh == nil && c.Ping == nil
}

// PostEmulation sends an EmulationRequest to base's /emulation, encoded as
// proto (JSON: data as a JSON string), and returns the status and body.
func PostEmulation(t testing.TB, client *http.Client, base string, proto protocol.Type, node, session string, data []byte) (int, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	req := &protocol.EmulationRequest{Node: node, Session: session}
	var body []byte
	ctype := "application/json"
	if proto == protocol.TypeProtobuf {
		req.Data = data
		var err error
		if body, err = req.MarshalCF(); err != nil {
			t.Fatal(err)
		}
		ctype = "application/octet-stream"
	} else {
		req.Data = cfjson.AppendString(nil, string(data))
		body = req.AppendJSON(nil)
	}
	resp, err := client.Post(base+"/emulation", ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("emulation: %v", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// Close ends the stream from the client's side and waits for its reader.
func (s *Stream) Close() {
	s.cancel()
	_ = s.Resp.Body.Close()
	<-s.done
}
