package parleycli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// DefaultURL is where a local dev server (chatserver --dev) listens.
const DefaultURL = "ws://127.0.0.1:8000/connection/websocket"

// WebSocketPath is the chat server's WebSocket endpoint.
const WebSocketPath = "/connection/websocket"

// connFlags are the flags every command that talks to a chat server takes.
type connFlags struct {
	url       string
	token     string
	tokenFile string
	timeout   time.Duration
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "chat server: ws://, wss://, http:// or https:// URL (default $PARLEY_URL or "+DefaultURL+")")
	fs.StringVar(&c.token, "token", "", "connection token (prefer --token-file or $PARLEY_TOKEN: arguments show in ps)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the connection token")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the connection and each request")
}

// resolve applies the environment and reads the token file.
func (c *connFlags) resolve(env Env) (endpoint, token string, err error) {
	raw := c.url
	if raw == "" {
		raw = env.Getenv("PARLEY_URL")
	}
	if raw == "" {
		raw = DefaultURL
	}
	if endpoint, err = WebSocketURL(raw); err != nil {
		return "", "", err
	}
	switch {
	case c.token != "" && c.tokenFile != "":
		return "", "", usageErr("give --token or --token-file, not both")
	case c.tokenFile != "":
		data, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", "", fmt.Errorf("token file: %w", err)
		}
		token = string(bytes.TrimSpace(data))
		if token == "" {
			return "", "", fmt.Errorf("token file %s is empty", c.tokenFile)
		}
	case c.token != "":
		token = c.token
	default:
		token = env.Getenv("PARLEY_TOKEN")
	}
	if c.timeout <= 0 {
		return "", "", usageErr("--timeout must be positive")
	}
	return endpoint, token, nil
}

// WebSocketURL turns a server address into its WebSocket endpoint:
// http(s)://host → ws(s)://host/connection/websocket; a ws(s) URL without a
// path gets the endpoint path too.
func WebSocketURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", usageErr("--url %q: %v", raw, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", usageErr("--url %q: scheme must be ws, wss, http or https", raw)
	}
	if u.Host == "" {
		return "", usageErr("--url %q: no host", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = WebSocketPath
	}
	return u.String(), nil
}

// session is a connected client and what the commands need to watch it.
type session struct {
	client *centrifuge.Client
	// lost is closed when the client stops for good (a disconnect the
	// protocol says not to retry, or Close).
	lost     chan struct{}
	lostOnce sync.Once
	mu       sync.Mutex
	reason   string
}

func (s *session) lose(reason string) {
	s.mu.Lock()
	if s.reason == "" {
		s.reason = reason
	}
	s.mu.Unlock()
	s.lostOnce.Do(func() { close(s.lost) })
}

// Reason is why the session was lost.
func (s *session) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// dial connects and waits until the server accepted the connection. state,
// when not nil, hears about later reconnects ("reconnecting: …", "connected").
func dial(ctx context.Context, endpoint, token string, timeout time.Duration, state func(string)) (*session, error) {
	client := centrifuge.NewJsonClient(endpoint, centrifuge.Config{
		Token:             token,
		Name:              "parley-cli",
		MinReconnectDelay: 200 * time.Millisecond,
		MaxReconnectDelay: 5 * time.Second,
		HandshakeTimeout:  timeout,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		// The token cannot be refreshed from here: an expired token ends the session.
		GetToken: func(centrifuge.ConnectionTokenEvent) (string, error) { return "", centrifuge.ErrUnauthorized },
	})
	s := &session{client: client, lost: make(chan struct{})}
	connected := make(chan struct{}, 1)
	var (
		mu      sync.Mutex
		lastErr error
		first   = true
	)
	client.OnConnected(func(centrifuge.ConnectedEvent) {
		mu.Lock()
		wasFirst := first
		first = false
		mu.Unlock()
		select {
		case connected <- struct{}{}:
		default:
		}
		if !wasFirst && state != nil {
			state("connected")
		}
	})
	client.OnConnecting(func(e centrifuge.ConnectingEvent) {
		mu.Lock()
		wasFirst := first
		mu.Unlock()
		if !wasFirst && state != nil {
			state(fmt.Sprintf("reconnecting (%s)", e.Reason))
		}
	})
	client.OnDisconnected(func(e centrifuge.DisconnectedEvent) {
		s.lose(fmt.Sprintf("disconnected by the server: %s (code %d)", e.Reason, e.Code))
	})
	client.OnError(func(e centrifuge.ErrorEvent) {
		mu.Lock()
		lastErr = e.Error
		mu.Unlock()
	})
	if err := client.Connect(); err != nil {
		client.Close()
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-connected:
		return s, nil
	case <-s.lost:
		client.Close()
		return nil, fmt.Errorf("connect to %s: %s", endpoint, s.Reason())
	case <-timer.C:
	case <-ctx.Done():
	}
	client.Close()
	mu.Lock()
	defer mu.Unlock()
	if lastErr != nil {
		return nil, fmt.Errorf("could not connect to %s within %s: %w", endpoint, timeout, lastErr)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("could not connect to %s within %s", endpoint, timeout)
}

// Close disconnects.
func (s *session) Close() {
	s.client.Close()
	s.lose("closed")
}

// subscribe subscribes to channel and waits for the server's answer.
func (s *session) subscribe(ctx context.Context, channel string, cfg centrifuge.SubscriptionConfig, timeout time.Duration,
	setup func(*centrifuge.Subscription)) (*centrifuge.Subscription, error) {
	sub, err := s.client.NewSubscription(channel, cfg)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	done := make(chan error, 1)
	var once sync.Once
	finish := func(err error) { once.Do(func() { done <- err }) }
	sub.OnSubscribed(func(centrifuge.SubscribedEvent) { finish(nil) })
	sub.OnError(func(e centrifuge.SubscriptionErrorEvent) {
		var pe *centrifuge.Error
		if errors.As(e.Error, &pe) && !pe.Temporary {
			finish(e.Error)
		}
	})
	sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) {
		if e.Code != 0 {
			finish(fmt.Errorf("%s (code %d)", e.Reason, e.Code))
		}
	})
	if setup != nil {
		setup(sub)
	}
	if err := sub.Subscribe(); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			_ = s.client.RemoveSubscription(sub)
			return nil, fmt.Errorf("subscribe %s: %w", channel, describe(err))
		}
		return sub, nil
	case <-s.lost:
		return nil, fmt.Errorf("subscribe %s: %s", channel, s.Reason())
	case <-timer.C:
		return nil, fmt.Errorf("subscribe %s: no answer within %s", channel, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// describe adds what a protocol error code means for a person.
func describe(err error) error {
	var pe *centrifuge.Error
	if !errors.As(err, &pe) {
		return err
	}
	hint := map[uint32]string{
		101: "the server does not accept this token",
		102: "no such kind of room on this server",
		103: "your token does not allow this",
		106: "a server limit was reached",
		107: "the server rejected the request as malformed",
		108: "not available in this room",
		109: "the token has expired: mint a new one",
		111: "too many requests: slow down",
	}[pe.Code]
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w: %s", err, hint)
}

// isTemporary reports whether retrying the same request may succeed.
func isTemporary(err error) bool {
	var pe *centrifuge.Error
	if errors.As(err, &pe) {
		return pe.Temporary || pe.Code == 100 || pe.Code == 111
	}
	return errors.Is(err, centrifuge.ErrTimeout) || errors.Is(err, centrifuge.ErrClientDisconnected)
}
