package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/centrifugal/protocol/cfjson"

	"github.com/parley-chat/parley/chatserver/node"
)

// EmulationPath is where clients of the streaming transports send their
// commands after connect.
const EmulationPath = "/emulation"

// DefaultEmulationWait bounds an /emulation request: delivering the
// commands to the session (through RabbitMQ when another replica holds it)
// and the session handling them.
const DefaultEmulationWait = 10 * time.Second

// SetEmulationWait replaces DefaultEmulationWait (tests, and deployments
// whose replicas answer slower).
func (h *Handler) SetEmulationWait(d time.Duration) {
	h.mu.Lock()
	h.emulationWait = d
	h.mu.Unlock()
}

// ServeEmulation takes an EmulationRequest (protobuf with Content-Type
// application/octet-stream, JSON otherwise, whose data is then a JSON string
// holding the commands) and hands its commands to the addressed session, on
// this replica or another. It answers 204 once the session handled them (the
// replies travel on the stream), 404 when the session is gone (the client
// reconnects), 504 when the session's replica did not answer in time.
func (h *Handler) ServeEmulation(w http.ResponseWriter, r *http.Request) {
	if !h.cors(w, r, "POST, OPTIONS") || !acceptsMethod(w, r, http.MethodPost) {
		return
	}
	limit := h.bodyLimit()
	// A JSON request carries its commands as an escaped string: allow for
	// the escaping, and bound the commands themselves after decoding.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 2*limit+4096))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "emulation request larger than allowed by limits.maxMessageBytes", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "read emulation request: "+err.Error(), http.StatusBadRequest)
		}
		return
	}
	req, err := decodeEmulation(body, r.Header.Get("Content-Type") == "application/octet-stream")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(req.Data)) > limit {
		http.Error(w, "emulation request: data larger than limits.maxMessageBytes", http.StatusRequestEntityTooLarge)
		return
	}
	h.mu.Lock()
	wait := h.emulationWait
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err = h.n.Emulate(ctx, req.Node, req.Session, req.Data)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, node.ErrSessionNotFound):
		http.Error(w, "emulation: session not found (closed, or never on that node): reconnect", http.StatusNotFound)
	case errors.Is(err, node.ErrEmulationBadRequest):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.Is(err, node.ErrNodeNotAnswering), errors.Is(err, context.DeadlineExceeded):
		http.Error(w, fmt.Sprintf("emulation: node %q did not answer within %s", req.Node, wait), http.StatusGatewayTimeout)
	default:
		h.log.Warn("emulation request failed", "node", req.Node, "error", err)
		// The error names the broker or the node's answer, never a credential.
		http.Error(w, fmt.Sprintf("emulation: could not reach the session's node: %v", err), http.StatusServiceUnavailable)
	}
}

// decodeEmulation decodes an EmulationRequest and returns it with Data
// holding the commands as the session's transport frame would.
func decodeEmulation(body []byte, isProtobuf bool) (*protocol.EmulationRequest, error) {
	req := &protocol.EmulationRequest{}
	if isProtobuf {
		if err := req.UnmarshalCF(body); err != nil {
			return nil, fmt.Errorf("emulation request: not a protobuf EmulationRequest: %w", err)
		}
	} else {
		if err := cfjson.Unmarshal(body, req, 0); err != nil {
			return nil, fmt.Errorf("emulation request: not a JSON EmulationRequest: %w", err)
		}
		if len(req.Data) > 0 {
			s, err := cfjson.UnmarshalString(req.Data)
			if err != nil {
				return nil, fmt.Errorf("emulation request: data must be a JSON string holding the commands: %w", err)
			}
			req.Data = []byte(s)
		}
	}
	switch {
	case req.Node == "":
		return nil, errors.New("emulation request: node is required (ConnectResult.node)")
	case req.Session == "":
		return nil, errors.New("emulation request: session is required (ConnectResult.session)")
	case len(req.Data) == 0:
		return nil, errors.New("emulation request: data is required (the commands)")
	}
	return req, nil
}

// emulateLocal is the node's EmulationHandler: it hands data to the stream
// holding session, waiting until the session handled it.
func (h *Handler) emulateLocal(ctx context.Context, session string, data []byte) error {
	h.mu.Lock()
	c := h.streams[session]
	h.mu.Unlock()
	if c == nil {
		return node.ErrSessionNotFound
	}
	if len(data) == 0 {
		return node.ErrEmulationBadRequest
	}
	switch err := c.deliver(ctx, data); {
	case errors.Is(err, errStreamGone):
		return node.ErrSessionNotFound
	case err != nil:
		return fmt.Errorf("%w: session busy: %w", node.ErrNodeNotAnswering, err)
	}
	return nil
}
