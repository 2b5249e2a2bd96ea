package groups_test

import (
	"encoding/json"
	"testing"

	"github.com/centrifugal/protocol"
	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/servertest"
)

func TestMain(m *testing.M) { leakcheck.Main(m, servertest.LeakOptions()...) }

// conn is a raw JSON connection of one user ("" for anonymous).
type conn struct {
	t *testing.T
	r *servertest.Raw
}

func dial(t *testing.T, srv *servertest.Server, user string) *conn {
	t.Helper()
	r := servertest.DialRaw(t, srv.WS, "json")
	token := ""
	if user != "" {
		token = servertest.Token(t, user)
	}
	r.Connect(t, token)
	return &conn{t: t, r: r}
}

// code is a reply's error code, 0 for success.
func code(rep *protocol.Reply) uint32 {
	if rep.Error != nil {
		return rep.Error.Code
	}
	return 0
}

// call runs an rpc and returns its decoded result and error code.
func (c *conn) call(method string, params any) (map[string]any, *protocol.Error) {
	c.t.Helper()
	data, err := json.Marshal(params)
	if err != nil {
		c.t.Fatal(err)
	}
	rep := c.r.Reply(c.t, c.r.Command(c.t, &protocol.Command{Rpc: &protocol.RPCRequest{Method: method, Data: data}}))
	if rep.Error != nil {
		return nil, rep.Error
	}
	var out map[string]any
	if err := json.Unmarshal(rep.Rpc.Data, &out); err != nil {
		c.t.Fatalf("%s result %s: %v", method, rep.Rpc.Data, err)
	}
	return out, nil
}

// must runs an rpc that must succeed.
func (c *conn) must(method string, params any) map[string]any {
	c.t.Helper()
	out, e := c.call(method, params)
	if e != nil {
		c.t.Fatalf("%s %v: %d %s", method, params, e.Code, e.Message)
	}
	return out
}

func (c *conn) cmd(cmd *protocol.Command) uint32 {
	c.t.Helper()
	return code(c.r.Reply(c.t, c.r.Command(c.t, cmd)))
}

func errCode(e *protocol.Error) uint32 {
	if e == nil {
		return 0
	}
	return e.Code
}
