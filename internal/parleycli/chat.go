package parleycli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/golang-jwt/jwt/v5"
)

const chatHelp = `chat [flags] ROOM

Joins ROOM, prints its messages as they arrive and sends each line read from
stdin as a message. Lines starting with "/" are commands:
  /edit OFFSET TEXT   replace your message #OFFSET
  /delete OFFSET      delete your message #OFFSET
  /quit               leave
  //TEXT              send a message that starts with "/"
Without --non-interactive it keeps printing after stdin ends until interrupted
(so "parley chat ROOM </dev/null --json" only listens).`

// publishAttempts bounds retries of one message on temporary errors; the
// idempotency key makes a retry of a message the server already stored harmless.
const publishAttempts = 5

var errQuit = errors.New("quit")

func runChat(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("chat", chatHelp, env)
	var cf connFlags
	cf.register(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object per event (message, edit, delete, typing, join, leave, sent)")
	var nonInteractive bool
	fs.BoolVar(&nonInteractive, "non-interactive", false, "send stdin's lines, wait until the server stored each, then exit; print no incoming messages")
	fs.BoolVar(&nonInteractive, "n", false, "short for --non-interactive")
	last := fs.Int("last", 0, "first print the last N messages of the room's history")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("give exactly one ROOM (got %d arguments)", len(pos))
	}
	if *last < 0 || *last > 1000 {
		return usageErr("--last must be between 0 and 1000")
	}
	channel, err := ChannelFor(pos[0])
	if err != nil {
		return err
	}
	endpoint, token, err := cf.resolve(env)
	if err != nil {
		return err
	}

	var errMu sync.Mutex
	status := func(format string, args ...any) {
		if nonInteractive {
			return
		}
		errMu.Lock()
		defer errMu.Unlock()
		fmt.Fprintf(env.Stderr, "parley: "+format+"\n", args...)
	}
	s, err := dial(ctx, endpoint, token, cf.timeout, func(st string) { status("%s", st) })
	if err != nil {
		return err
	}
	defer s.Close()

	out := &printer{w: env.Stdout, json: *jsonOut}
	g := &gate{out: out, show: !nonInteractive}
	sub, err := s.subscribe(ctx, channel, centrifuge.SubscriptionConfig{Recoverable: true, Positioned: true, JoinLeave: true}, cf.timeout,
		func(sub *centrifuge.Subscription) {
			sub.OnPublication(func(e centrifuge.PublicationEvent) { g.live(publicationEvent(channel, e.Publication)) })
			sub.OnJoin(func(e centrifuge.JoinEvent) {
				g.live(Event{Type: "join", Channel: channel, User: e.User, Client: e.Client})
			})
			sub.OnLeave(func(e centrifuge.LeaveEvent) {
				g.live(Event{Type: "leave", Channel: channel, User: e.User, Client: e.Client})
			})
		})
	if err != nil {
		return err
	}
	var after uint64
	if *last > 0 {
		hctx, cancel := context.WithTimeout(ctx, cf.timeout)
		res, err := sub.History(hctx, centrifuge.WithHistoryLimit(int32(*last)), centrifuge.WithHistoryReverse(true))
		cancel()
		if err != nil {
			return fmt.Errorf("history of %s: %w", channel, describe(err))
		}
		pubs := slices.Clone(res.Publications)
		slices.Reverse(pubs)
		for _, p := range pubs {
			out.print(publicationEvent(channel, p))
			after = max(after, p.Offset)
		}
	}
	g.open(after)
	if err := out.failed(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	status("joined %s as %s on %s; type a message and press Enter (/edit N TEXT, /delete N, /quit)", channel, userOf(token), endpoint)

	lines := make(chan string)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		sc := bufio.NewScanner(env.Stdin)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
		readErr <- sc.Err()
		close(lines)
	}()

	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := <-readErr; err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				if nonInteractive {
					return nil
				}
				lines = nil // keep printing until interrupted
				continue
			}
			err := handleLine(ctx, s.client, channel, line, out, cf.timeout)
			switch {
			case errors.Is(err, errQuit):
				return nil
			case err != nil && nonInteractive:
				return err
			case err != nil:
				status("%v", err)
			}
			if err := out.failed(); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		case <-s.lost:
			return errors.New(s.Reason())
		case <-ctx.Done():
			return nil // interrupted: a normal way to leave
		}
	}
}

// gate holds live events back until the history printed first is out, then
// drops what that history already showed.
type gate struct {
	mu     sync.Mutex
	out    *printer
	show   bool
	opened bool
	after  uint64
	buf    []Event
}

func (g *gate) live(e Event) {
	if !g.show {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		g.buf = append(g.buf, e)
		return
	}
	g.out.print(e)
}

func (g *gate) open(after uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.opened, g.after = true, after
	for _, e := range g.buf {
		if e.Offset != 0 && e.Offset <= after {
			continue
		}
		g.out.print(e)
	}
	g.buf = nil
}

// handleLine sends one line of input: a message or a command.
func handleLine(ctx context.Context, c *centrifuge.Client, channel, line string, out *printer, timeout time.Duration) error {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return nil
	}
	if strings.HasPrefix(line, "//") {
		line = line[1:]
	} else if strings.HasPrefix(line, "/") {
		cmd, rest, _ := strings.Cut(line, " ")
		switch cmd {
		case "/quit":
			return errQuit
		case "/edit":
			num, text, _ := strings.Cut(strings.TrimSpace(rest), " ")
			offset, err := strconv.ParseUint(num, 10, 64)
			if err != nil || offset == 0 || strings.TrimSpace(text) == "" {
				return errors.New("usage: /edit OFFSET TEXT")
			}
			return change(ctx, c, "edit", map[string]any{"channel": channel, "offset": offset, "data": map[string]string{"text": text}}, timeout)
		case "/delete":
			offset, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
			if err != nil || offset == 0 {
				return errors.New("usage: /delete OFFSET")
			}
			return change(ctx, c, "delete", map[string]any{"channel": channel, "offset": offset}, timeout)
		default:
			return fmt.Errorf("unknown command %s (send a line starting with / as //%s)", cmd, line[1:])
		}
	}
	res, err := Send(ctx, c, channel, line, timeout)
	if err != nil {
		return err
	}
	if out.json {
		out.print(Event{Type: "sent", Channel: channel, Offset: res.Offset, Duplicate: res.Duplicate})
	}
	return nil
}

// SendResult is the server's answer to a publish.
type SendResult struct {
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Duplicate bool   `json:"duplicate"`
}

// Send publishes a chat message through the server's idempotent "publish"
// RPC, retrying temporary failures with the same key so the message is
// stored once however often it is retried.
func Send(ctx context.Context, c *centrifuge.Client, channel, text string, timeout time.Duration) (SendResult, error) {
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	req, err := json.Marshal(map[string]any{"channel": channel, "data": map[string]string{"text": text}, "key": hex.EncodeToString(kb[:])})
	if err != nil {
		return SendResult{}, err
	}
	var lastErr error
	for attempt := range publishAttempts {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(200<<attempt) * time.Millisecond):
			case <-ctx.Done():
				return SendResult{}, ctx.Err()
			}
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := c.RPC(rctx, "publish", req)
		cancel()
		if err == nil {
			var r SendResult
			if err := json.Unmarshal(res.Data, &r); err != nil {
				return SendResult{}, fmt.Errorf("send: bad answer from the server: %w", err)
			}
			return r, nil
		}
		lastErr = err
		if ctx.Err() != nil || !isTemporary(err) {
			break
		}
	}
	return SendResult{}, fmt.Errorf("send: %w", describe(lastErr))
}

func change(ctx context.Context, c *centrifuge.Client, method string, req map[string]any, timeout time.Duration) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.RPC(rctx, method, data); err != nil {
		return fmt.Errorf("%s #%v: %w", method, req["offset"], describe(err))
	}
	return nil
}

// userOf reads the subject of a token for display; the server verifies it.
func userOf(token string) string {
	if token == "" {
		return "anonymous"
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil || claims.Subject == "" {
		return "the token's user"
	}
	return claims.Subject
}
