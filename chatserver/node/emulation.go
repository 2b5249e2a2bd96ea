package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Bidirectional emulation: a client on HTTP-streaming or SSE receives over a
// long-lived response and sends its commands as separate HTTP requests,
// addressed to the node holding its stream and to its session. Behind a load
// balancer without sticky sessions such a request may land on any replica;
// the node forwards it to the right one over the control exchange and waits
// (bounded) for the answer, so the client learns whether its commands reached
// the session. The replies to the commands themselves travel on the stream.

var (
	// ErrSessionNotFound says the addressed session is not (or no longer)
	// held by the addressed node: the client must reconnect.
	ErrSessionNotFound = errors.New("emulation: session not found")
	// ErrEmulationBadRequest says the commands could not be decoded for the
	// session's protocol.
	ErrEmulationBadRequest = errors.New("emulation: malformed commands")
	// ErrNodeNotAnswering says the addressed node did not answer within the
	// wait: it is gone, or too busy.
	ErrNodeNotAnswering = errors.New("emulation: node did not answer")
)

// EmulationHandler hands commands to a local session; the transport installs
// it. It returns ErrSessionNotFound or ErrEmulationBadRequest (or wraps
// them) when the commands did not reach the session, and returns once the
// session has processed them or ctx ends.
type EmulationHandler func(ctx context.Context, session string, data []byte) error

// emulation keeps the handler and the forwarded requests waiting for answers.
type emulation struct {
	mu      sync.Mutex
	handler EmulationHandler
	pending map[string]chan string
	// running are the forwarded requests being handled; Run waits for them.
	running sync.WaitGroup
}

// SetEmulationHandler installs the function that delivers emulated commands
// to this node's sessions.
func (n *Node) SetEmulationHandler(h EmulationHandler) {
	n.emu.mu.Lock()
	n.emu.handler = h
	n.emu.mu.Unlock()
}

// emulation result codes carried in control messages.
const (
	emuOK         = "ok"
	emuNoSession  = "no_session"
	emuBadRequest = "bad_request"
	emuFailed     = "failed"
)

func emuCode(err error) string {
	switch {
	case err == nil:
		return emuOK
	case errors.Is(err, ErrSessionNotFound):
		return emuNoSession
	case errors.Is(err, ErrEmulationBadRequest):
		return emuBadRequest
	}
	return emuFailed
}

func emuError(code, node string) error {
	switch code {
	case emuOK:
		return nil
	case emuNoSession:
		return fmt.Errorf("%w on node %q", ErrSessionNotFound, node)
	case emuBadRequest:
		return ErrEmulationBadRequest
	}
	return fmt.Errorf("emulation on node %q failed", node)
}

// Emulate delivers data (encoded commands, as the client sent them) to
// session on node nodeID: directly when that is this node, otherwise
// through the broker's control exchange, waiting until ctx ends for the
// other node's answer (ErrNodeNotAnswering after that).
func (n *Node) Emulate(ctx context.Context, nodeID, session string, data []byte) error {
	if nodeID == "" || session == "" {
		return fmt.Errorf("%w: node and session are required", ErrEmulationBadRequest)
	}
	if nodeID == n.id {
		return n.emulateLocal(ctx, session, data)
	}
	var idb [12]byte
	_, _ = rand.Read(idb[:])
	req := hex.EncodeToString(idb[:])
	answer := make(chan string, 1)
	n.emu.mu.Lock()
	if n.emu.pending == nil {
		n.emu.pending = map[string]chan string{}
	}
	n.emu.pending[req] = answer
	n.emu.mu.Unlock()
	defer func() {
		n.emu.mu.Lock()
		delete(n.emu.pending, req)
		n.emu.mu.Unlock()
	}()
	if err := n.sendControl(ctx, control{Op: "emulate", Node: nodeID, From: n.id, Req: req, Client: session, Data: data}); err != nil {
		return err
	}
	select {
	case code := <-answer:
		return emuError(code, nodeID)
	case <-ctx.Done():
		return fmt.Errorf("%w: node %q, session %q: %w", ErrNodeNotAnswering, nodeID, session, ctx.Err())
	}
}

func (n *Node) emulateLocal(ctx context.Context, session string, data []byte) error {
	n.emu.mu.Lock()
	h := n.emu.handler
	n.emu.mu.Unlock()
	if h == nil {
		return ErrSessionNotFound // no emulated transport on this node: it holds no such session
	}
	return h(ctx, session, data)
}

// emulationWait bounds how long a node works on a forwarded request before
// it answers; the asking node's own wait is its caller's business.
const emulationWait = 10 * time.Second

// handleEmulate runs a forwarded request addressed to this node, off the
// broker's delivery goroutine (a command may wait on the store), and sends
// the answer back to the asking node.
func (n *Node) handleEmulate(c control) {
	n.emu.running.Add(1)
	go func() {
		defer n.emu.running.Done()
		ctx, cancel := context.WithTimeout(context.Background(), emulationWait)
		defer cancel()
		code := emuCode(n.emulateLocal(ctx, c.Client, c.Data))
		if err := n.sendControl(ctx, control{Op: "emulated", Node: c.From, Req: c.Req, Reason: code}); err != nil {
			n.log.Warn("answer emulation request", "to", c.From, "error", err)
		}
	}()
}

// handleEmulated passes an answer to the request waiting for it (none when
// it gave up already).
func (n *Node) handleEmulated(c control) {
	n.emu.mu.Lock()
	answer := n.emu.pending[c.Req]
	n.emu.mu.Unlock()
	if answer != nil {
		select {
		case answer <- c.Reason:
		default:
		}
	}
}
