// Package httpapi is what the chat server answers over plain HTTP, split by
// who may ask. The admin listener (operators, Prometheus, backends) gets the
// server HTTP API (POST /api/publish, /api/broadcast, /api/history,
// /api/presence, /api/disconnect, /api/groups/*) guarded by an API key, Prometheus /metrics,
// /healthz and a /readyz that names what is not ready. The public listener
// (anyone on the internet) gets /healthz and a /readyz that says only "ok" or
// "not ready", and a 404 for /api/* and /metrics. Requests and replies of the
// API are JSON.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/node"
	"github.com/parley-chat/parley/chatserver/store"
)

// maxBody bounds API request bodies.
const maxBody = 1 << 20

// API serves the HTTP API of one node.
type API struct {
	n *node.Node
	// keys returns the accepted API keys, current first (none disables
	// /api/*); read per request so a rotated key file takes effect. During a
	// rotation the previous key is accepted too.
	keys func() []string
}

// New builds the API; keys returns the accepted API keys, current first.
func New(n *node.Node, keys func() []string) *API { return &API{n: n, keys: keys} }

// RegisterPublic adds the routes anonymous callers may reach: /healthz and a
// terse /readyz (the reason a node is not ready names the broker or store and
// their errors, which is for operators only). /api/ and /metrics answer 404
// here explicitly, so no catch-all mounted later (the web page) serves them.
func (a *API) RegisterPublic(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", a.readyz(false))
	mux.Handle("/api/", http.NotFoundHandler())
	mux.Handle("/metrics", http.NotFoundHandler())
}

// RegisterAdmin adds the operator-facing routes: the HTTP API, /metrics,
// /healthz and a /readyz that says why the node is not ready.
func (a *API) RegisterAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", a.readyz(true))
	mux.Handle("GET /metrics", a.n.Metrics().Handler())
	mux.HandleFunc("POST /api/publish", a.guard(a.publish))
	mux.HandleFunc("POST /api/broadcast", a.guard(a.broadcast))
	mux.HandleFunc("POST /api/history", a.guard(a.history))
	mux.HandleFunc("POST /api/presence", a.guard(a.presence))
	mux.HandleFunc("POST /api/disconnect", a.guard(a.disconnect))
	mux.HandleFunc("POST /api/groups/{action}", a.guard(a.groups))
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok\n")
}

// readyz answers 200 "ok" or 503 "not ready", with the reason (and, when
// ready, what is degraded) only when detail is set (the admin listener).
// What ready means is node.Readiness's doc (docs/guarantees.md).
func (a *API) readyz(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		degraded, err := a.n.Readiness(ctx)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			msg := "not ready\n"
			if detail {
				msg = "not ready: " + err.Error() + "\n"
			}
			_, _ = io.WriteString(w, msg)
			return
		}
		if detail && degraded != "" {
			_, _ = io.WriteString(w, "ok, degraded: "+degraded+"\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}
}

// apiError is the body of every failed API call.
type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	pe := node.ErrorCode(err)
	status := http.StatusInternalServerError
	// By code: errors with a message of their own (the groups') share it.
	switch pe.Code {
	case codes.ErrBadRequest.Code, codes.ErrUnknownChannel.Code, codes.ErrUnrecoverablePosition.Code:
		status = http.StatusBadRequest
	case codes.ErrNotAvailable.Code:
		status = http.StatusNotFound
	case codes.ErrPermissionDenied.Code, codes.ErrUnauthorized.Code:
		status = http.StatusForbidden
	case codes.ErrLimitExceeded.Code:
		status = http.StatusConflict
	case codes.ErrTooManyRequests.Code:
		status = http.StatusTooManyRequests
	}
	writeJSON(w, status, map[string]apiError{"error": {Code: pe.Code, Message: pe.Message}})
}

// guard checks the API key (header "Authorization: apikey <key>" or
// "X-API-Key: <key>") against every accepted key in constant time and
// passes the body, bounded, to the handler.
func (a *API) guard(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		keys := a.keys()
		if len(keys) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]apiError{"error": {Code: 108, Message: "API disabled: no API key configured"}})
			return
		}
		got := r.Header.Get("X-API-Key")
		if v := r.Header.Get("Authorization"); got == "" && strings.HasPrefix(strings.ToLower(v), "apikey ") {
			got = strings.TrimSpace(v[len("apikey "):])
		}
		if !keyMatches(got, keys) {
			writeJSON(w, http.StatusUnauthorized, map[string]apiError{"error": {Code: 101, Message: "unauthorized"}})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]apiError{"error": {Code: 107, Message: "body too large"}})
			return
		}
		h(w, r, body)
	}
}

// keyMatches compares got with every key, without stopping at a match, so
// the time taken does not say which key (current or previous) matched.
func keyMatches(got string, keys []string) bool {
	ok := 0
	for _, k := range keys {
		if k != "" {
			ok |= subtle.ConstantTimeCompare([]byte(got), []byte(k))
		}
	}
	return ok == 1
}

func decode(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", codes.ErrBadRequest, err)
	}
	return nil
}

type publishRequest struct {
	Channel        string            `json:"channel"`
	Channels       []string          `json:"channels,omitempty"`
	Data           json.RawMessage   `json:"data"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

type publishResult struct {
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (a *API) publishOne(ctx context.Context, channel string, req publishRequest) (publishResult, error) {
	if len(req.Data) == 0 || !json.Valid(req.Data) {
		return publishResult{}, codes.ErrBadRequest
	}
	res, err := a.n.Publish(ctx, channel, req.Data, nil, node.PublishOptions{IdempotencyKey: req.IdempotencyKey, Tags: req.Tags})
	if err != nil {
		return publishResult{}, err
	}
	return publishResult{Offset: res.Position.Offset, Epoch: res.Position.Epoch, Duplicate: res.Duplicate}, nil
}

func (a *API) publish(w http.ResponseWriter, r *http.Request, body []byte) {
	var req publishRequest
	if err := decode(body, &req); err != nil || req.Channel == "" {
		writeErr(w, codes.ErrBadRequest)
		return
	}
	res, err := a.publishOne(r.Context(), req.Channel, req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]publishResult{"result": res})
}

func (a *API) broadcast(w http.ResponseWriter, r *http.Request, body []byte) {
	var req publishRequest
	if err := decode(body, &req); err != nil || len(req.Channels) == 0 || req.Channel != "" {
		writeErr(w, codes.ErrBadRequest)
		return
	}
	type item struct {
		Result *publishResult `json:"result,omitempty"`
		Error  *apiError      `json:"error,omitempty"`
	}
	out := make([]item, 0, len(req.Channels))
	for _, ch := range req.Channels {
		res, err := a.publishOne(r.Context(), ch, req)
		if err != nil {
			pe := node.ErrorCode(err)
			out = append(out, item{Error: &apiError{Code: pe.Code, Message: pe.Message}})
			continue
		}
		out = append(out, item{Result: &res})
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{"responses": out}})
}

// apiPublication shows data as JSON (or base64 in b64data when it is not JSON).
type apiPublication struct {
	Offset  uint64              `json:"offset"`
	Data    json.RawMessage     `json:"data,omitempty"`
	B64Data []byte              `json:"b64data,omitempty"`
	Info    *message.ClientInfo `json:"info,omitempty"`
	Tags    map[string]string   `json:"tags,omitempty"`
	Time    int64               `json:"time,omitempty"`
}

type historyRequest struct {
	Channel string                  `json:"channel"`
	Limit   int                     `json:"limit"`
	Since   *message.StreamPosition `json:"since,omitempty"`
	Reverse bool                    `json:"reverse,omitempty"`
}

func (a *API) history(w http.ResponseWriter, r *http.Request, body []byte) {
	var req historyRequest
	if err := decode(body, &req); err != nil || req.Channel == "" {
		writeErr(w, codes.ErrBadRequest)
		return
	}
	ns, err := a.n.Authorizer().Namespace(req.Channel)
	if err != nil {
		writeErr(w, err)
		return
	}
	if ns.History.Size == 0 {
		writeErr(w, codes.ErrNotAvailable)
		return
	}
	if req.Limit < 0 || req.Limit > ns.History.Size {
		req.Limit = ns.History.Size
	}
	pubs, pos, err := a.n.History(r.Context(), req.Channel, store.HistoryOptions{Since: req.Since, Limit: req.Limit, Reverse: req.Reverse})
	if err != nil {
		writeErr(w, err)
		return
	}
	out := make([]apiPublication, 0, len(pubs))
	for _, p := range pubs {
		ap := apiPublication{Offset: p.Offset, Data: p.Data, Info: p.Info, Tags: p.Tags, Time: p.Time}
		if !json.Valid(p.Data) { // published as binary by a protobuf client
			ap.Data, ap.B64Data = nil, p.Data
		}
		out = append(out, ap)
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{"publications": out, "offset": pos.Offset, "epoch": pos.Epoch}})
}

func (a *API) presence(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Channel string `json:"channel"`
	}
	if err := decode(body, &req); err != nil || req.Channel == "" {
		writeErr(w, codes.ErrBadRequest)
		return
	}
	ns, err := a.n.Authorizer().Namespace(req.Channel)
	if err != nil {
		writeErr(w, err)
		return
	}
	if !ns.Presence {
		writeErr(w, codes.ErrNotAvailable)
		return
	}
	p, err := a.n.Presence(r.Context(), req.Channel)
	if err != nil {
		writeErr(w, err)
		return
	}
	clients, users, err := a.n.PresenceStats(r.Context(), req.Channel)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{"presence": p, "num_clients": clients, "num_users": users}})
}

func (a *API) disconnect(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		User   string `json:"user"`
		Code   uint32 `json:"code,omitempty"`
		Reason string `json:"reason,omitempty"`
	}
	if err := decode(body, &req); err != nil || req.User == "" {
		writeErr(w, codes.ErrBadRequest)
		return
	}
	if req.Code != 0 && (req.Code < 3000 || req.Code > 4999) {
		writeErr(w, fmt.Errorf("%w: code must be 3000-4999", codes.ErrBadRequest))
		return
	}
	if len(req.Reason) > codes.MaxReasonBytes {
		writeJSON(w, http.StatusBadRequest, map[string]apiError{"error": {Code: codes.ErrBadRequest.Code,
			Message: fmt.Sprintf("reason: at most %d bytes (what a WebSocket close frame holds)", codes.MaxReasonBytes)}})
		return
	}
	d := codes.Disconnect{Code: req.Code, Reason: req.Reason}
	if d.Code != 0 && d.Reason == "" {
		d.Reason = "disconnected by server"
	}
	if err := a.n.DisconnectUser(r.Context(), req.User, d); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{}})
}
