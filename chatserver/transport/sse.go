package transport

import (
	"net/http"

	"github.com/centrifugal/protocol"
)

// SSEPath is where Server-Sent Events clients connect.
const SSEPath = "/connection/sse"

// connectParam carries the connect command of an SSE GET (EventSource can
// send no body), as the Centrifuge SDKs put it.
const connectParam = "cf_connect"

// ServeSSE serves Server-Sent Events (JSON only: an event's data is text).
// The connect command comes in the cf_connect query parameter of a GET (what
// a browser's EventSource can send) or as the body of a POST; every reply
// then goes out as one event, "data: <json>" and a blank line. Later
// commands arrive through /emulation.
func (h *Handler) ServeSSE(w http.ResponseWriter, r *http.Request) {
	if !h.cors(w, r, "GET, POST, OPTIONS") || !acceptsMethod(w, r, http.MethodGet, http.MethodPost) {
		return
	}
	var data []byte
	if r.Method == http.MethodGet {
		param := r.URL.Query().Get(connectParam)
		switch {
		case param == "":
			http.Error(w, "query parameter "+connectParam+": a connect command is required", http.StatusBadRequest)
			return
		case int64(len(param)) > h.bodyLimit():
			http.Error(w, "query parameter "+connectParam+" larger than limits.maxMessageBytes", http.StatusRequestEntityTooLarge)
			return
		}
		data = []byte(param)
	} else {
		var ok bool
		if data, ok = h.readBody(w, r); !ok {
			return
		}
	}
	if !h.admit(w) {
		return
	}
	// The preamble gets the headers and a first byte through proxies at once,
	// so the browser's EventSource opens before the connect reply.
	h.serveStream(w, r, protocol.TypeJSON, "text/event-stream; charset=utf-8", appendEvents, []byte("\r\n"), data)
}

// appendEvents frames JSON replies one SSE event each. Encoded JSON holds
// no raw newline, so one data line carries a whole reply.
func appendEvents(dst []byte, _ protocol.Type, msgs [][]byte) []byte {
	for _, m := range msgs {
		dst = append(dst, "data: "...)
		dst = append(append(dst, m...), '\n', '\n')
	}
	return dst
}
