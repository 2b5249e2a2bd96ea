package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// The fallbacks are on by default and each can be turned off; /emulation
// goes with the last of them.
func TestStreamingTransportSwitches(t *testing.T) {
	off := false
	tests := []struct {
		name            string
		httpStream, sse *bool
		want            []int // http_stream, sse, emulation: 400 (an empty POST, served) or 0 (not served: anything else)
	}{
		{"default", nil, nil, []int{400, 400, 400}},
		{"sse off", nil, &off, []int{400, 0, 400}},
		{"both off", &off, &off, []int{0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := servertest.Config()
			cfg.HTTP.HTTPStream, cfg.HTTP.SSE = tc.httpStream, tc.sse
			srv := servertest.Start(t, cfg, nil, nil)
			for i, path := range []string{"/connection/http_stream", "/connection/sse", "/emulation"} {
				resp, err := http.Post(srv.HTTP+path, "application/json", strings.NewReader(""))
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if served := resp.StatusCode == http.StatusBadRequest; served != (tc.want[i] == 400) {
					t.Errorf("POST %s: %d, served %v, want served %v", path, resp.StatusCode, served, !served)
				}
			}
		})
	}
	cfg, err := config.Parse([]byte(`{"http":{"address":":8000","adminAddress":":8001","sse":false},"auth":{"allowAnonymous":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HTTP.HTTPStreamEnabled() || cfg.HTTP.SSEEnabled() {
		t.Errorf("parsed: httpStream %v, sse %v; want true, false", cfg.HTTP.HTTPStreamEnabled(), cfg.HTTP.SSEEnabled())
	}
}
