// Package provision holds what the operator's external clients
// (provision/amqp, provision/postgres) share: a failure classified by a
// reason that a condition can report.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Error is a classified failure. R is the client's own Reason type, so an
// AMQP failure and a PostgreSQL failure stay distinct types.
type Error[R ~string] struct {
	Reason R
	// Op says what was being done ("connect", "create role \"parley_a_b\"").
	Op  string
	Err error
}

func (e *Error[R]) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Err) }

func (e *Error[R]) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of an *Error[R] in err's chain, other for any
// other non-nil error and "" for nil.
func ReasonOf[R ~string](err error, other R) R {
	if err == nil {
		return ""
	}
	var e *Error[R]
	if errors.As(err, &e) {
		return e.Reason
	}
	return other
}

// Classify wraps err, with op and the Reason reasonFor gives it, unless err
// is nil or already classified.
func Classify[R ~string](op string, err error, reasonFor func(error) R) error {
	if err == nil {
		return nil
	}
	var e *Error[R]
	if errors.As(err, &e) {
		return err
	}
	return &Error[R]{Reason: reasonFor(err), Op: op, Err: err}
}

// Unreachable reports a failure to hold a conversation at all: a network
// error (dial, DNS, timeout; *net.OpError and *net.DNSError are net.Errors),
// a refused or reset connection, a cut stream, or a context that ended.
func Unreachable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
