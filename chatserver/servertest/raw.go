package servertest

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"
)

// Raw is a hand-driven WebSocket client for what an SDK would never send:
// malformed frames, missing pongs, oversized messages, not reading at all.
type Raw struct {
	Conn  *websocket.Conn
	Proto protocol.Type
	id    uint32
}

// DialRaw opens a WebSocket to url; proto "protobuf" asks for protobuf framing.
func DialRaw(t testing.TB, url, proto string) *Raw {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: Timeout}
	r := &Raw{Proto: protocol.TypeJSON}
	if proto == "protobuf" {
		d.Subprotocols = []string{"centrifuge-protobuf"}
		r.Proto = protocol.TypeProtobuf
	}
	conn, resp, err := d.Dial(url, http.Header{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = resp.Body.Close()
	r.Conn = conn
	t.Cleanup(func() { _ = conn.Close() })
	return r
}

// WriteFrame sends bytes as one WebSocket message.
func (r *Raw) WriteFrame(t testing.TB, data []byte) {
	t.Helper()
	mt := websocket.TextMessage
	if r.Proto == protocol.TypeProtobuf {
		mt = websocket.BinaryMessage
	}
	if err := r.Conn.WriteMessage(mt, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// Command encodes and sends one command, assigning it the next id unless
// cmd.Id is already set or noID is requested with id 0 explicitly via SendRaw.
func (r *Raw) Command(t testing.TB, cmd *protocol.Command) uint32 {
	t.Helper()
	if cmd.Id == 0 {
		r.id++
		cmd.Id = r.id
	}
	var (
		data []byte
		err  error
	)
	if r.Proto == protocol.TypeJSON {
		data, err = protocol.NewJSONCommandEncoder().Encode(cmd)
	} else {
		data, err = protocol.NewProtobufCommandEncoder().Encode(cmd)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.WriteFrame(t, data)
	return cmd.Id
}

// Commands sends cmds in one frame (ids assigned as Command does) and
// returns their ids.
func (r *Raw) Commands(t testing.TB, cmds []*protocol.Command) []uint32 {
	t.Helper()
	var (
		frame []byte
		ids   = make([]uint32, 0, len(cmds))
	)
	for _, cmd := range cmds {
		if cmd.Id == 0 {
			r.id++
			cmd.Id = r.id
		}
		ids = append(ids, cmd.Id)
		if r.Proto == protocol.TypeJSON {
			data, _ := protocol.NewJSONCommandEncoder().Encode(cmd)
			if len(frame) > 0 {
				frame = append(frame, '\n')
			}
			frame = append(frame, data...)
			continue
		}
		data, err := protocol.NewProtobufCommandEncoder().Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		frame = append(frame, data...)
	}
	r.WriteFrame(t, frame)
	return ids
}

// Connect sends connect with token and waits for its reply.
func (r *Raw) Connect(t testing.TB, token string) *protocol.ConnectResult {
	t.Helper()
	id := r.Command(t, &protocol.Command{Connect: &protocol.ConnectRequest{Token: token}})
	rep := r.Reply(t, id)
	if rep.Error != nil || rep.Connect == nil {
		t.Fatalf("connect: %+v", rep)
	}
	return rep.Connect
}

// Read reads the next frame's replies; the error is the close error, if any.
func (r *Raw) Read(deadline time.Duration) ([]*protocol.Reply, error) {
	_ = r.Conn.SetReadDeadline(time.Now().Add(deadline))
	_, data, err := r.Conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	var dec protocol.ReplyDecoder
	if r.Proto == protocol.TypeJSON {
		dec = protocol.NewJSONReplyDecoder(data)
	} else {
		dec = protocol.NewProtobufReplyDecoder(data)
	}
	var out []*protocol.Reply
	for {
		rep, err := dec.Decode()
		if err != nil {
			break
		}
		out = append(out, rep)
	}
	return out, nil
}

// Reply waits for the reply to command id, skipping pushes and pings.
func (r *Raw) Reply(t testing.TB, id uint32) *protocol.Reply {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for time.Now().Before(deadline) {
		reps, err := r.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for reply %d: %v", id, err)
		}
		for _, rep := range reps {
			if rep.Id == id {
				return rep
			}
		}
	}
	t.Fatalf("no reply to %d", id)
	return nil
}

// WaitClose reads until the server closes and returns the close code
// (0 when the connection ended without a close frame).
func (r *Raw) WaitClose(t testing.TB) int {
	t.Helper()
	code, err := r.WaitCloseErr()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// WaitCloseErr is WaitClose returning errors instead of failing.
func (r *Raw) WaitCloseErr() (int, error) {
	deadline := time.Now().Add(3 * Timeout)
	for time.Now().Before(deadline) {
		_, err := r.Read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("server did not close the connection")
}
