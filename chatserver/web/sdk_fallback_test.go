package web_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// TestSDKFallbackTransports runs test/sdk-fallback.mjs: the Centrifuge JS SDK
// the page bundles, in Node, on HTTP-streaming (JSON and protobuf) and SSE,
// with its stream on one replica and its commands sent to the other (real
// RabbitMQ and PostgreSQL): connect, subscribe, publish, history, presence,
// recovery after the server cuts the stream, and a server disconnect code
// reaching the client.
func TestSDKFallbackTransports(t *testing.T) {
	if testing.Short() {
		t.Skip("SDK test skipped in -short mode")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("SKIP: node is not installed")
	}
	if _, err := os.Stat("node_modules/centrifuge/package.json"); err != nil {
		t.Skip("SKIP: the npm packages are not installed (make browser-deps, or npm ci in chatserver/web)")
	}
	top := testenv.NewTopology(t)
	db := testenv.NewDatabase(t, "parley_sdk")
	a := startReplica(t, 0, top, db)
	b := startReplica(t, 1, top, db)
	for _, tc := range []struct{ transport, format string }{
		{"http_stream", "json"},
		{"http_stream", "protobuf"},
		{"sse", "json"},
	} {
		t.Run(tc.transport+"/"+tc.format, func(t *testing.T) {
			user := "sdk-" + tc.transport + "-" + tc.format
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "test/sdk-fallback.mjs")
			cmd.Env = append(os.Environ(),
				"PARLEY_STREAM="+a.HTTP,
				"PARLEY_EMULATION="+b.HTTP,
				"PARLEY_ADMIN="+b.Admin,
				"PARLEY_API_KEY="+servertest.APIKey,
				"PARLEY_TOKEN="+servertest.Token(t, user),
				"PARLEY_USER="+user,
				"PARLEY_TRANSPORT="+tc.transport,
				"PARLEY_FORMAT="+tc.format,
			)
			out, err := cmd.CombinedOutput()
			t.Logf("%s", out)
			if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
				t.Fatalf("sdk-fallback.mjs: %v", err)
			}
		})
	}
}
