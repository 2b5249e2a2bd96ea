package amqp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/parley-chat/parley/internal/naming"
)

func TestTopologyForNamesEveryObjectFromNamespaceAndName(t *testing.T) {
	got := TopologyFor("chat", "team-chat")
	want := Topology{
		Exchange:           "parley.chat.team-chat.pub",
		ControlExchange:    "parley.chat.team-chat.control",
		DeadLetterExchange: "parley.chat.team-chat.dlx",
		DeadLetterQueue:    "parley.chat.team-chat.dead-letter",
	}
	if got != want {
		t.Fatalf("TopologyFor = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTopologyForNeverCollidesAcrossNamespaces(t *testing.T) {
	// A namespace cannot contain dots, a name can: the namespace segment is
	// always the one right after "parley.".
	pairs := [][2]string{{"a", "b.c"}, {"a-b", "c"}, {"a", "b-c"}, {"ab", "c"}, {"a", "bc"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		top := TopologyFor(p[0], p[1])
		for _, n := range []string{top.Exchange, top.ControlExchange, top.DeadLetterExchange, top.DeadLetterQueue} {
			if prev, dup := seen[n]; dup {
				t.Fatalf("%v and %v both map to %q", prev, p, n)
			}
			seen[n] = p
		}
	}
}

func TestTopologyForMatchesWhatTheChatServerIsConfiguredWith(t *testing.T) {
	// The ConfigMap builder renders naming.ExchangeNames; the operator must
	// declare exactly those.
	ex := naming.ExchangeNames("chat", "team-chat")
	top := TopologyFor("chat", "team-chat")
	if top.Exchange != ex.Publications || top.ControlExchange != ex.Control || top.DeadLetterExchange != ex.DeadLetter || top.DeadLetterQueue != ex.DeadLetterQueue {
		t.Fatalf("TopologyFor = %+v, configured exchanges %+v", top, ex)
	}
}

func TestLongestNamesTheAPIAllowsFit(t *testing.T) {
	// A namespace is at most 63 characters, a ChatCluster name at most 45 (CEL).
	top := TopologyFor(strings.Repeat("n", 63), strings.Repeat("x", 45))
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := TopologyFor("n", strings.Repeat("x", 253)).Validate(); err == nil {
		t.Fatal("a name longer than RabbitMQ allows passed Validate")
	}
}

func TestValidateRefusesEmptyAndOverlongNames(t *testing.T) {
	top := TopologyFor("a", "b")
	empty := top
	empty.ControlExchange = ""
	if err := empty.Validate(); err == nil || !strings.Contains(err.Error(), "control exchange") {
		t.Errorf("empty control exchange: err = %v", err)
	}
	long := top
	long.DeadLetterQueue = strings.Repeat("q", 256)
	if err := long.Validate(); err == nil || !strings.Contains(err.Error(), "dead-letter queue") {
		t.Errorf("overlong queue: err = %v", err)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Reason
	}{
		{"credentials refused at handshake", amqp091.ErrCredentials, ReasonAccessRefused},
		{"403 from the broker", &amqp091.Error{Code: amqp091.AccessRefused, Reason: "ACCESS_REFUSED", Server: true}, ReasonAccessRefused},
		{"vhost not allowed", &amqp091.Error{Code: amqp091.NotAllowed, Reason: "NOT_ALLOWED - vhost x not found", Server: true}, ReasonAccessRefused},
		{"precondition failed", &amqp091.Error{Code: amqp091.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'type'", Server: true}, ReasonConflict},
		{"connection closed under us", amqp091.ErrClosed, ReasonUnreachable},
		{"broker shutting down", &amqp091.Error{Code: amqp091.ConnectionForced, Server: true}, ReasonUnreachable},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, ReasonUnreachable},
		{"dns", &net.DNSError{Err: "no such host", Name: "rabbitmq.ns.svc"}, ReasonUnreachable},
		{"eof in handshake", io.EOF, ReasonUnreachable},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), ReasonUnreachable},
		{"socket read timed out", &amqp091.Error{Code: amqp091.FrameError, Reason: "read tcp: i/o timeout"}, ReasonUnreachable},
		{"malformed frame from the broker", &amqp091.Error{Code: amqp091.FrameError, Server: true}, ReasonError},
		{"internal error", &amqp091.Error{Code: amqp091.InternalError, Server: true}, ReasonError},
		{"certificate of another CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, ReasonTLS},
		{"peer does not speak TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ReasonTLS},
		{"management API 401", fmt.Errorf("get: %w", errUnauthorized), ReasonAccessRefused},
		{"management API 403", rabbithole.ErrorResponse{StatusCode: 403, Message: "not_authorised"}, ReasonAccessRefused},
		{"management API 500", rabbithole.ErrorResponse{StatusCode: 500, Message: "internal"}, ReasonError},
		{"anything else", errors.New("boom"), ReasonError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := classify("op", tc.err)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("ReasonOf(classify(%v)) = %q, want %q", tc.err, got, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("classified error does not wrap the cause")
			}
			if again := classify("outer", err); again != err {
				t.Fatalf("classifying twice rewrapped the error: %v", again)
			}
		})
	}
	if ReasonOf(nil) != "" {
		t.Error("ReasonOf(nil) is not empty")
	}
}

func TestParseURIErrorsNeverEchoThePassword(t *testing.T) {
	for _, uri := range []string{
		"amqp://user:s3cret-pa55@host:5672/%zz",   // bad escape
		"http://user:s3cret-pa55@host:5672/",      // bad scheme
		"amqp://user:s3cret-pa55@host:notaport/",  // bad port
		"amqp://user:s3cret pa55@host:5672/vhost", // whitespace
	} {
		_, err := parseURI(uri)
		if err == nil {
			t.Errorf("%s: no error", uri)
			continue
		}
		if ReasonOf(err) != ReasonInvalidURI {
			t.Errorf("reason = %q, want %q", ReasonOf(err), ReasonInvalidURI)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}
