package groups

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/store/memory"
)

// effects records what the service asked of the node.
type effects struct {
	mu    sync.Mutex
	unsub []string
}

func (e *effects) Unsubscribe(_ context.Context, user, channel string, _ uint32, _ string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.unsub = append(e.unsub, user+" "+channel)
	return nil
}
func (e *effects) Notify(context.Context, string, []byte) error { return nil }
func (e *effects) Forget(context.Context, string) error         { return nil }

// FuzzRPC: whatever a client sends to whichever method, the answer is a
// result or a protocol error, never a panic or an internal error.
func FuzzRPC(f *testing.F) {
	cfg := config.Default()
	cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: "grp", Group: true, History: config.History{Size: 10}})
	st := memory.New(memory.Options{})
	defer st.Close()
	s := New(cfg, auth.NewAuthorizer(cfg), st, &effects{}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if _, err := s.RPC(ctx, Caller{User: "alice"}, "group.create", []byte(`{"id":"g"}`)); err != nil {
		f.Fatal(err)
	}
	for name := range methods {
		for _, data := range []string{`{}`, `null`, `[]`, `{"channel":"grp:g"}`, `{"channel":"grp:g","user":"bob"}`,
			`{"channel":"grp:g","user":"alice","role":"owner"}`, `{"query":"a b \"c\" -d or e"}`, `{"code":"x"}`,
			`{"channel":"grp:g","limit":-1}`, `{"channel":"grp:g","duration":99999999999}`, `{"users":["a","b"]}`, "\xff"} {
			f.Add(name, data, "alice")
			f.Add(name, data, "bob")
		}
	}
	f.Fuzz(func(t *testing.T, method, data, user string) {
		if auth.ValidateUserID(user) != nil {
			user = "mallory"
		}
		out, err := s.RPC(ctx, Caller{User: user}, method, []byte(data))
		if err == nil {
			if len(out) == 0 {
				t.Fatalf("%s %q: empty result", method, data)
			}
			return
		}
		var pe *codes.Error
		if !errors.As(err, &pe) || pe.Code == codes.ErrInternal.Code {
			t.Fatalf("%s %q as %q: %v is not a protocol error", method, data, user, err)
		}
	})
}
