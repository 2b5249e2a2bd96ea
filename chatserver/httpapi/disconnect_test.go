package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// A WebSocket close frame holds a code and at most 123 bytes of reason:
// with a longer one the client would see an abnormal closure and reconnect,
// defeating a "do not reconnect" code. The API refuses such a reason naming
// the field; a long reason reaching a connection another way is cut to fit.
func TestDisconnectReasonFitsACloseFrame(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(), nil, nil)
	raw := servertest.DialRaw(t, srv.WS, "json")
	raw.Connect(t, servertest.Token(t, "bob"))

	long := strings.Repeat("é", 100) // 200 bytes
	code, body := call(t, http.MethodPost, srv.Admin+"/api/disconnect", servertest.APIKey, `{"user":"bob","code":3503,"reason":"`+long+`"}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "reason") {
		t.Fatalf("%d %s: want 400 naming reason", code, body)
	}
	if err := srv.Node.DisconnectUser(context.Background(), "bob", codes.Disconnect{Code: 3503, Reason: long}); err != nil {
		t.Fatal(err)
	}
	if got := raw.WaitClose(t); got != 3503 {
		t.Fatalf("closed with %d, want 3503", got)
	}
}
