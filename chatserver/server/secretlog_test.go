package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/centrifugal/protocol"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-chat/parley/chatserver/auth"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/server"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// logBuffer collects everything a server logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// secrets is what must never reach a log line.
type secrets struct {
	t    *testing.T
	list map[string]string // secret → what it is
}

// window is the length of the shortest piece of a secret that counts as a
// leak: a log that prints only part of a key or signature still leaks it.
const window = 12

// add records a secret. For a JWT the secret part is its signature (header
// and claims are not secret, and the claims are logged in plain: the user).
func (s *secrets) add(what, secret string) string {
	core := secret
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		core = parts[2]
	}
	s.list[core] = what
	return secret
}

func (s *secrets) assertAbsent(where, text string) {
	s.t.Helper()
	for secret, what := range s.list {
		for i := 0; i+window <= len(secret); i++ {
			if strings.Contains(text, secret[i:i+window]) {
				s.t.Errorf("%s contains part of the %s (%q)", where, what, secret[i:i+window])
				break
			}
		}
	}
}

// Tokens, subscription tokens, the HMAC key and API keys (right and wrong)
// never appear in the server's logs, even at debug level, whatever the
// client sends: good, expired, forged, wrong-audience tokens, refreshes,
// subscription tokens, malformed frames carrying a token, HTTP API calls.
func TestSecretsNeverLogged(t *testing.T) {
	dir := t.TempDir()
	hmacKey := randomHex(t, 32)
	apiKey := randomHex(t, 24)
	forgeKey := []byte(randomHex(t, 32))
	keyFile, apiKeyFile := filepath.Join(dir, "hmac"), filepath.Join(dir, "apikey")
	if err := os.WriteFile(keyFile, []byte(hmacKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(apiKeyFile, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := servertest.Config()
	cfg.Auth.HMACSecretFiles = []string{keyFile}
	cfg.Auth.Audience = "parley-logs"
	cfg.HTTP.APIKeyFile = apiKeyFile
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := servertest.StartWithLogger(t, cfg, nil, nil, logger)

	sec := &secrets{t: t, list: map[string]string{}}
	sec.add("HMAC key", hmacKey)
	sec.add("API key", apiKey)
	sec.add("forging key", string(forgeKey))
	conn := func(what, user string, ttl time.Duration, key []byte, aud string) string {
		c := servertest.TokenClaims(user, ttl)
		c.Audience = jwt.ClaimStrings{aud}
		return sec.add(what, servertest.Sign(t, c, key))
	}
	subTok := func(what, user, channel string, ttl time.Duration, key []byte) string {
		c := &auth.SubscriptionClaims{Channel: channel, RegisteredClaims: jwt.RegisteredClaims{
			Subject: user, Audience: jwt.ClaimStrings{"parley-logs"}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
		}}
		return sec.add(what, servertest.Sign(t, c, key))
	}
	key := []byte(hmacKey)
	good := conn("good token", "alice", time.Hour, key, "parley-logs")
	refreshed := conn("refresh token", "alice", 2*time.Hour, key, "parley-logs")
	expired := conn("expired token", "alice", -time.Hour, key, "parley-logs")
	forged := conn("forged token", "alice", time.Hour, forgeKey, "parley-logs")
	wrongAud := conn("wrong-audience token", "alice", time.Hour, key, "elsewhere")
	otherUser := conn("other user's token", "mallory", time.Hour, key, "parley-logs")
	garbage := sec.add("garbage token", "eyJhbGciOiJIUzI1NiJ9."+randomHex(t, 16)+"."+randomHex(t, 16))
	goodSub := subTok("subscription token", "alice", "secret:plans", time.Hour, key)
	forgedSub := subTok("forged subscription token", "alice", "secret:plans", time.Hour, forgeKey)
	expiredSub := subTok("expired subscription token", "alice", "secret:plans", -time.Hour, key)

	for _, proto := range servertest.Protocols {
		t.Run("centrifuge-go "+proto, func(t *testing.T) {
			c := servertest.Connect(t, srv.WS, proto, good)
			servertest.Subscribe(t, c, "room:logs", centrifuge.SubscriptionConfig{})
			s := servertest.Subscribe(t, c, "secret:plans", centrifuge.SubscriptionConfig{Token: goodSub})
			if _, err := s.Publish(ctx(t), []byte(`{"text":"hi"}`)); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("raw "+proto, func(t *testing.T) {
			// Refused connects.
			r := servertest.DialRaw(t, srv.WS, proto)
			if rep := r.Reply(t, r.Command(t, &protocol.Command{Connect: &protocol.ConnectRequest{Token: expired}})); rep.Error == nil || rep.Error.Code != 109 {
				t.Fatalf("expired token: %+v", rep)
			}
			for _, tok := range []string{forged, wrongAud, garbage} {
				r := servertest.DialRaw(t, srv.WS, proto)
				r.Command(t, &protocol.Command{Connect: &protocol.ConnectRequest{Token: tok}})
				if code := r.WaitClose(t); code != 3500 {
					t.Fatalf("close %d, want 3500 invalid token", code)
				}
			}
			// Refresh: good, then for another user, forged and expired (each closes).
			r = servertest.DialRaw(t, srv.WS, proto)
			r.Connect(t, good)
			if rep := r.Reply(t, r.Command(t, &protocol.Command{Refresh: &protocol.RefreshRequest{Token: refreshed}})); rep.Error != nil || rep.Refresh == nil {
				t.Fatalf("refresh: %+v", rep)
			}
			// Subscription tokens: good, forged, expired, for another channel; sub_refresh.
			if rep := r.Reply(t, r.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "secret:plans", Token: goodSub}})); rep.Error != nil {
				t.Fatalf("subscribe with token: %+v", rep.Error)
			}
			if rep := r.Reply(t, r.Command(t, &protocol.Command{SubRefresh: &protocol.SubRefreshRequest{Channel: "secret:plans", Token: goodSub}})); rep.Error != nil {
				t.Fatalf("sub_refresh: %+v", rep.Error)
			}
			if rep := r.Reply(t, r.Command(t, &protocol.Command{SubRefresh: &protocol.SubRefreshRequest{Channel: "secret:plans", Token: forgedSub}})); rep.Error == nil || rep.Error.Code != 103 {
				t.Fatalf("forged sub_refresh: %+v", rep)
			}
			// goodSub is for secret:plans, not secret:other.
			for tok, code := range map[string]uint32{forgedSub: 103, expiredSub: 109, goodSub: 103} {
				if rep := r.Reply(t, r.Command(t, &protocol.Command{Subscribe: &protocol.SubscribeRequest{Channel: "secret:other", Token: tok}})); rep.Error == nil || rep.Error.Code != code {
					t.Fatalf("subscribe with a bad token: %+v, want %d", rep, code)
				}
			}
			for tok, code := range map[string]int{otherUser: 3500, forged: 3500, expired: 3005} {
				r := servertest.DialRaw(t, srv.WS, proto)
				r.Connect(t, good)
				r.Command(t, &protocol.Command{Refresh: &protocol.RefreshRequest{Token: tok}})
				if got := r.WaitClose(t); got != code {
					t.Fatalf("refresh with a bad token: close %d, want %d", got, code)
				}
			}
		})
	}
	t.Run("malformed frame carrying a token", func(t *testing.T) {
		r := servertest.DialRaw(t, srv.WS, "json")
		r.WriteFrame(t, []byte(`{"id":1,"connect":{"token":"`+good+`"}`))
		if code := r.WaitClose(t); code != 3501 {
			t.Fatalf("close %d, want 3501", code)
		}
		r = servertest.DialRaw(t, srv.WS, "json")
		r.WriteFrame(t, []byte(`{"id":1,"connect":{"token":`+good+`}}`))
		if code := r.WaitClose(t); code != 3501 {
			t.Fatalf("close %d, want 3501", code)
		}
	})
	t.Run("HTTP API", func(t *testing.T) {
		wrong := sec.add("wrong API key", randomHex(t, 24))
		near := sec.add("near-miss API key", apiKey+"x")
		body := `{"channel":"news:logs","data":{"text":"hi"}}`
		for _, tc := range []struct {
			header, value string
			status        int
		}{
			{"Authorization", "apikey " + apiKey, 200},
			{"X-API-Key", apiKey, 200},
			{"Authorization", "apikey " + wrong, 401},
			{"X-API-Key", near, 401},
			{"Authorization", "Bearer " + good, 401},
		} {
			req, err := http.NewRequest(http.MethodPost, srv.Admin+"/api/publish", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(tc.header, tc.value)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("%s: status %d (%s), want %d", tc.header, resp.StatusCode, data, tc.status)
			}
			sec.assertAbsent("API reply", string(data))
		}
	})
	srv.Stop(t) // everything the server logs, shutdown included

	out := logs.String()
	// The buffer really holds the server's debug output: otherwise the
	// assertion below would pass for nothing.
	for _, want := range []string{`"msg":"connected"`, `"msg":"invalid token"`, `"msg":"invalid subscription token"`, `"msg":"shutdown complete"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %s; the test is not seeing the server's logs:\n%s", want, out)
		}
	}
	sec.assertAbsent("server log", out)
	if t.Failed() {
		t.Logf("server log:\n%s", out)
	}
}

// Passwords in the broker and store URLs stay out of logs, errors and /readyz.
func TestBackendPasswordsNeverLogged(t *testing.T) {
	t.Parallel() // RabbitMQ answers a bad password after a delay
	password := "pw-" + randomHex(t, 16)
	dir := t.TempDir()

	t.Run("amqp", func(t *testing.T) {
		u, err := url.Parse(testenv.AMQPURL())
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword("guest", password) // RabbitMQ refuses it
		urlFile := filepath.Join(dir, "amqp-url")
		if err := os.WriteFile(urlFile, []byte(u.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := servertest.Config()
		cfg.Broker = config.Broker{Type: "amqp", URLFile: urlFile, Exchange: testenv.Name("parley_logs"), ControlExchange: testenv.Name("parley_logs_ctl")}
		logs := &logBuffer{}
		logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		srv := startWithDefaultBackends(t, cfg, logger)
		deadline := time.Now().Add(servertest.Timeout)
		for !strings.Contains(logs.String(), "cannot connect to RabbitMQ") {
			if time.Now().After(deadline) {
				t.Fatalf("no connection failure logged:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		readyz := map[string]string{}
		for where, base := range map[string]string{"public /readyz": srv.HTTP, "admin /readyz": srv.Admin} {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			// Within broker.readinessGrace the node stays ready; the admin
			// listener still names the broker's error (degraded).
			if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %d %s with a broker that refuses us", where, resp.StatusCode, body)
			}
			readyz[where] = string(body)
		}
		if !strings.Contains(readyz["admin /readyz"], "broker") {
			t.Errorf("admin /readyz does not name the broker's failure: %q", readyz["admin /readyz"])
		}
		srv.Stop(t)
		for where, text := range map[string]string{"log": logs.String(), "public /readyz": readyz["public /readyz"], "admin /readyz": readyz["admin /readyz"]} {
			if strings.Contains(text, password) {
				t.Errorf("the broker password is in the %s:\n%s", where, text)
			}
		}
	})
	t.Run("postgres", func(t *testing.T) {
		u, err := url.Parse(testenv.PostgresURL())
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), password)
		u.Path = "/" + testenv.Name("parley_no_such_db") // fails to connect, nothing is created
		urlFile := filepath.Join(dir, "pg-url")
		if err := os.WriteFile(urlFile, []byte(u.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := servertest.Config()
		cfg.Store = config.Store{Type: "postgres", URLFile: urlFile, MaxConns: 2, RetentionInterval: config.Duration(time.Minute)}
		cfg.Auth.HMACSecretFiles = []string{filepath.Join(dir, "hmac")}
		if err := os.WriteFile(cfg.Auth.HMACSecretFiles[0], servertest.Secret, 0o600); err != nil {
			t.Fatal(err)
		}
		logs := &logBuffer{}
		logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = server.Run(ctx, cfg, logger, server.Options{})
		if err == nil {
			t.Fatal("server ran with a database that does not exist")
		}
		for where, text := range map[string]string{"log": logs.String(), "error": err.Error()} {
			if strings.Contains(text, password) {
				t.Errorf("the store password is in the %s: %s", where, text)
			}
		}
	})
}

// startWithDefaultBackends starts a server building its broker and store
// from cfg (server.DefaultBackends), as the real binary does.
func startWithDefaultBackends(t *testing.T, cfg config.Config, logger *slog.Logger) *servertest.Server {
	t.Helper()
	return servertest.StartWithBackends(t, cfg, server.DefaultBackends, logger)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), servertest.Timeout)
	t.Cleanup(cancel)
	return c
}
