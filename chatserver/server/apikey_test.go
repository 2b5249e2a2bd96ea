package server_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/server"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// writeKey replaces a key file the way a Secret volume update does: the new
// content appears at once (rename), never half-written.
func writeKey(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// apiStatus is the HTTP status of an API call made with key.
func apiStatus(t *testing.T, base, key string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/presence", strings.NewReader(`{"channel":"room:keys"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// label names a key in a failure without printing it whole.
func label(k string) string {
	if len(k) < 6 {
		return fmt.Sprintf("%q", k)
	}
	return k[:6] + "…"
}

// waitKeys waits until every key in accepted is accepted and every key in
// refused is refused (files are re-checked at most once a second).
func waitKeys(t *testing.T, base, step string, accepted, refused []string) {
	t.Helper()
	deadline := time.Now().Add(servertest.Timeout)
	for {
		var wrong []string
		for _, k := range accepted {
			if code := apiStatus(t, base, k); code != http.StatusOK {
				wrong = append(wrong, label(k)+" refused")
			}
		}
		for _, k := range refused {
			if code := apiStatus(t, base, k); code != http.StatusUnauthorized {
				wrong = append(wrong, label(k)+" accepted")
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", step, wrong)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The operator's API key rotation as the server sees it (http.apiKeyFiles:
// the mounted api-key and api-key-previous): both keys work during the
// overlap, only the new one after the previous file is emptied or removed,
// all without a restart.
func TestAPIKeyRotationAcceptsThePreviousKeyDuringTheOverlap(t *testing.T) {
	dir := t.TempDir()
	current, previous := filepath.Join(dir, "api-key"), filepath.Join(dir, "api-key-previous")
	const (
		first  = "first-key-0123456789abcdef0123456789abcdef"
		second = "second-key-0123456789abcdef0123456789abcde"
		third  = "third-key-0123456789abcdef0123456789abcdef"
	)
	writeKey(t, current, first)
	// No previous file yet: a missing extra file holds no key.
	cfg := servertest.Config()
	cfg.HTTP.APIKeyFiles = []string{current, previous}
	srv := servertest.Start(t, cfg, nil, nil)
	waitKeys(t, srv.Admin, "start", []string{first}, []string{second, servertest.APIKey, ""})

	// Rotation: the new key is current, the old one previous.
	writeKey(t, previous, first)
	writeKey(t, current, second)
	waitKeys(t, srv.Admin, "during the overlap", []string{second, first}, []string{third})

	// The overlap ends: the operator empties the previous key.
	writeKey(t, previous, "")
	waitKeys(t, srv.Admin, "previous emptied", []string{second}, []string{first})

	// Another rotation, and this time the previous file goes altogether.
	writeKey(t, previous, second)
	writeKey(t, current, third)
	waitKeys(t, srv.Admin, "second overlap", []string{third, second}, []string{first})
	if err := os.Remove(previous); err != nil {
		t.Fatal(err)
	}
	waitKeys(t, srv.Admin, "previous removed", []string{third}, []string{second, first})

	// The current file vanishing for a moment (a Secret volume mid-update)
	// does not lock callers out: its last key stays.
	if err := os.Remove(current); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	waitKeys(t, srv.Admin, "current file missing", []string{third}, []string{second})
}

// http.apiKeyFile, the single-file form, still works and still reloads.
func TestSingleAPIKeyFileStillWorks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	const (
		before = "before-0123456789abcdef0123456789abcdef012"
		after  = "after-0123456789abcdef0123456789abcdef0123"
	)
	writeKey(t, path, before)
	cfg := servertest.Config()
	cfg.HTTP.APIKeyFile = path
	srv := servertest.Start(t, cfg, nil, nil)
	waitKeys(t, srv.Admin, "start", []string{before}, []string{after})
	time.Sleep(10 * time.Millisecond)
	writeKey(t, path, after)
	waitKeys(t, srv.Admin, "replaced", []string{after}, []string{before})
}

// The current key file must exist at start: a typo in the path is an error
// naming the key, not an API silently disabled.
func TestMissingCurrentAPIKeyFileFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := servertest.Config()
	cfg.HTTP.APIKeyFiles = []string{filepath.Join(dir, "absent"), filepath.Join(dir, "also-absent")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := server.Run(t.Context(), cfg, log, server.Options{Backends: servertest.Backends(nil, nil)})
	if err == nil || !strings.Contains(err.Error(), "http.apiKeyFiles[0]") {
		t.Fatalf("got %v, want an error naming http.apiKeyFiles[0]", err)
	}
}
