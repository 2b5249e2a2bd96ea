package amqp

import (
	"errors"
	"fmt"
	"net/url"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/provision"
)

// Reason classifies a failure so a condition can say what is wrong and who
// can fix it.
type Reason string

const (
	// ReasonUnreachable: no AMQP conversation (refused, timed out, reset, DNS).
	ReasonUnreachable Reason = "Unreachable"
	// ReasonAccessRefused: the broker refused the credentials (403
	// ACCESS_REFUSED) or access to the vhost (530 NOT_ALLOWED), or the user may
	// not configure these names.
	ReasonAccessRefused Reason = "AccessRefused"
	// ReasonConflict: an object exists with other properties (406
	// PRECONDITION_FAILED), e.g. an exchange of another type.
	ReasonConflict Reason = "DeclarationConflict"
	// ReasonInvalidURI: the URI in the Secret cannot be parsed.
	ReasonInvalidURI Reason = "InvalidURI"
	// ReasonTLS: the TLS handshake failed: the server's certificate does not
	// verify against the configured CA (or does not name the host), the CA
	// bundle holds no certificate, or the server does not speak TLS.
	ReasonTLS Reason = "TLSHandshakeFailed"
	// ReasonInvalid: a tenant's names cannot be used (empty, too long, a
	// character RabbitMQ or the owner marker cannot hold).
	ReasonInvalid Reason = "Invalid"
	// ReasonError: anything else the broker said.
	ReasonError Reason = "Error"
)

// Error is a classified broker failure. Its message never contains the URI's
// password.
type Error = provision.Error[Reason]

// ReasonOf returns the Reason of a classified error, ReasonError for any other
// non-nil error and "" for nil.
func ReasonOf(err error) Reason { return provision.ReasonOf(err, ReasonError) }

// classify wraps err with the Reason that fits it.
func classify(op string, err error) error { return provision.Classify(op, err, reasonFor) }

func reasonFor(err error) Reason {
	// Before the network checks: a failed handshake is a net.Error too.
	if provision.TLSFailure(err) {
		return ReasonTLS
	}
	if r, ok := managementReason(err); ok {
		return r
	}
	var amqpErr *amqp091.Error
	if errors.As(err, &amqpErr) {
		switch amqpErr.Code {
		case amqp091.AccessRefused, amqp091.NotAllowed:
			return ReasonAccessRefused
		case amqp091.PreconditionFailed:
			return ReasonConflict
		case amqp091.FrameError:
			if !amqpErr.Server {
				// amqp091 reports a failed socket read or write (timeout,
				// reset) as a local 501.
				return ReasonUnreachable
			}
		case amqp091.ChannelError, amqp091.ConnectionForced:
			// ErrClosed (the connection went away under us) or a broker
			// shutting down.
			return ReasonUnreachable
		}
		return ReasonError
	}
	if provision.Unreachable(err) {
		return ReasonUnreachable
	}
	return ReasonError
}

// parseURI validates uri without ever echoing it: url.Parse errors quote the
// whole URL, password included.
func parseURI(uri string) (amqp091.URI, error) {
	u, err := amqp091.ParseURI(uri)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return u, &Error{Reason: ReasonInvalidURI, Op: "parse broker URI", Err: errors.New(redactedMessage(err))}
	}
	return u, nil
}

// redactedMessage keeps only the cause of a URI error, not the input.
func redactedMessage(err error) string {
	return fmt.Sprintf("invalid AMQP URI (want amqp://user:password@host:5672/vhost with reserved characters percent-encoded): %v", err)
}
