// Package codes holds the Centrifuge client protocol's error and disconnect
// codes with their meanings, shared by the session (which returns them), the
// hub (which disconnects subscribers) and the node (which disconnects users).
//
// Disconnect codes 3000–3499 tell the client to reconnect; 3500–3999 tell it
// to stop. Error codes (100–112) travel in a reply to a single command and do
// not close the connection.
package codes

import (
	"fmt"
	"unicode/utf8"

	"github.com/centrifugal/protocol"
)

// Error is a protocol error returned in a reply to one command.
type Error struct {
	Code      uint32
	Message   string
	Temporary bool
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Message) }

// Proto converts the error to its wire form.
func (e *Error) Proto() *protocol.Error {
	return &protocol.Error{Code: e.Code, Message: e.Message, Temporary: e.Temporary}
}

// The protocol's built-in errors.
var (
	ErrInternal              = &Error{Code: 100, Message: "internal server error", Temporary: true}
	ErrUnauthorized          = &Error{Code: 101, Message: "unauthorized"}
	ErrUnknownChannel        = &Error{Code: 102, Message: "unknown channel"}
	ErrPermissionDenied      = &Error{Code: 103, Message: "permission denied"}
	ErrMethodNotFound        = &Error{Code: 104, Message: "method not found"}
	ErrAlreadySubscribed     = &Error{Code: 105, Message: "already subscribed"}
	ErrLimitExceeded         = &Error{Code: 106, Message: "limit exceeded"}
	ErrBadRequest            = &Error{Code: 107, Message: "bad request"}
	ErrNotAvailable          = &Error{Code: 108, Message: "not available"}
	ErrTokenExpired          = &Error{Code: 109, Message: "token expired"}
	ErrExpired               = &Error{Code: 110, Message: "expired"}
	ErrTooManyRequests       = &Error{Code: 111, Message: "too many requests", Temporary: true}
	ErrUnrecoverablePosition = &Error{Code: 112, Message: "unrecoverable position"}
)

// Disconnect closes a connection with a code and reason. It implements error
// so handlers can simply return it.
type Disconnect struct {
	Code   uint32
	Reason string
}

func (d Disconnect) Error() string { return fmt.Sprintf("disconnect %d: %s", d.Code, d.Reason) }

// MaxReasonBytes is the longest reason a WebSocket close frame can carry
// (125 bytes of payload, 2 of them the code).
const MaxReasonBytes = 123

// CloseReason is the reason cut to MaxReasonBytes at a UTF-8 boundary: a
// longer one makes the close frame invalid and the client sees an abnormal
// closure, which it reconnects after whatever the code said.
func (d Disconnect) CloseReason() string {
	r := d.Reason
	if len(r) <= MaxReasonBytes {
		return r
	}
	r = r[:MaxReasonBytes]
	for len(r) > 0 && !utf8.ValidString(r) {
		r = r[:len(r)-1]
	}
	return r
}

// Reconnect reports whether the client should reconnect after this disconnect.
func (d Disconnect) Reconnect() bool {
	return d.Code < 3500 || d.Code >= 5000 || (d.Code >= 4000 && d.Code < 4500)
}

// The protocol's built-in disconnects.
var (
	DisconnectConnectionClosed = Disconnect{3000, "connection closed"}
	// Reconnect (3000–3499).
	DisconnectShutdown          = Disconnect{3001, "shutdown"}
	DisconnectServerError       = Disconnect{3004, "internal server error"}
	DisconnectExpired           = Disconnect{3005, "connection expired"}
	DisconnectSubExpired        = Disconnect{3006, "subscription expired"}
	DisconnectSlow              = Disconnect{3008, "slow"}
	DisconnectWriteError        = Disconnect{3009, "write error"}
	DisconnectInsufficientState = Disconnect{3010, "insufficient state"}
	DisconnectForceReconnect    = Disconnect{3011, "force reconnect"}
	DisconnectNoPong            = Disconnect{3012, "no pong"}
	DisconnectTooManyRequests   = Disconnect{3013, "too many requests"}
	// Terminal (3500–3999).
	DisconnectInvalidToken          = Disconnect{3500, "invalid token"}
	DisconnectBadRequest            = Disconnect{3501, "bad request"}
	DisconnectStale                 = Disconnect{3502, "stale"}
	DisconnectForceNoReconnect      = Disconnect{3503, "force disconnect"}
	DisconnectConnectionLimit       = Disconnect{3504, "connection limit"}
	DisconnectChannelLimit          = Disconnect{3505, "channel limit"}
	DisconnectInappropriateProtocol = Disconnect{3506, "inappropriate protocol"}
	DisconnectPermissionDenied      = Disconnect{3507, "permission denied"}
	DisconnectNotAvailable          = Disconnect{3508, "not available"}
	DisconnectTooManyErrors         = Disconnect{3509, "too many errors"}
)

// Unsubscribe push codes: below 2500 the client stays unsubscribed, from 2500
// it resubscribes.
const (
	UnsubscribeServer       uint32 = 2000
	UnsubscribeInsufficient uint32 = 2500
	UnsubscribeExpired      uint32 = 2501
)

// Unsubscribe push codes of groups: the member lost access and the client
// must not resubscribe (all below 2500).
const (
	UnsubscribeRemoved uint32 = 2100 // removed by an admin
	UnsubscribeBanned  uint32 = 2101 // banned by an admin
	UnsubscribeLeft    uint32 = 2102 // left (from another device)
	UnsubscribeDeleted uint32 = 2103 // the group was deleted
)
