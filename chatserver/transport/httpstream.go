package transport

import (
	"errors"
	"io"
	"net/http"

	"github.com/centrifugal/protocol"
)

// HTTPStreamPath is where HTTP-streaming clients connect.
const HTTPStreamPath = "/connection/http_stream"

// ServeHTTPStream serves HTTP-streaming: the client POSTs its connect
// command (JSON, or protobuf with Content-Type application/octet-stream, as
// the Centrifuge SDKs send it) and reads the response as a stream of
// replies, JSON one per line or protobuf each behind its varint length.
// Its later commands arrive through /emulation.
func (h *Handler) ServeHTTPStream(w http.ResponseWriter, r *http.Request) {
	if !h.cors(w, r, "POST, OPTIONS") || !acceptsMethod(w, r, http.MethodPost) {
		return
	}
	proto, contentType := protocol.TypeJSON, "application/x-ndjson"
	frame := framing(appendLines)
	if r.Header.Get("Content-Type") == "application/octet-stream" {
		proto, contentType, frame = protocol.TypeProtobuf, "application/octet-stream", appendDelimited
	}
	data, ok := h.readBody(w, r)
	if !ok {
		return
	}
	if !h.admit(w) {
		return
	}
	h.serveStream(w, r, proto, contentType, frame, nil, data)
}

// readBody reads a bounded request body, answering 413 past the bound and
// 400 when it is empty (a stream without a connect command).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.bodyLimit()))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, "request body larger than limits.maxMessageBytes", http.StatusRequestEntityTooLarge)
		return nil, false
	case err != nil:
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	case len(data) == 0:
		http.Error(w, "request body: a connect command is required", http.StatusBadRequest)
		return nil, false
	}
	return data, true
}
