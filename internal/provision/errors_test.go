package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

type reasonA string
type reasonB string

func TestClassifyWrapsOnceAndKeepsItsReasonType(t *testing.T) {
	cause := errors.New("boom")
	err := Classify("connect", cause, func(error) reasonA { return "A" })
	if got := err.Error(); got != "connect: boom" {
		t.Fatalf("message = %q", got)
	}
	if !errors.Is(err, cause) {
		t.Fatal("classified error does not wrap its cause")
	}
	if again := Classify("outer", fmt.Errorf("ctx: %w", err), func(error) reasonA { return "other" }); ReasonOf(again, reasonA("none")) != "A" {
		t.Fatalf("classifying twice changed the reason: %v", again)
	}
	// Another client's reason type does not see this classification.
	if got := ReasonOf(err, reasonB("none")); got != "none" {
		t.Fatalf("ReasonOf[reasonB] = %q, want the fallback", got)
	}
	if got := Classify[reasonA]("op", nil, nil); got != nil {
		t.Fatalf("Classify(nil) = %v", got)
	}
	if got := ReasonOf(nil, reasonA("none")); got != "" {
		t.Fatalf("ReasonOf(nil) = %q", got)
	}
}

func TestUnreachable(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"dial refused":  {&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		"dns":           {&net.DNSError{Name: "db.ns.svc"}, true},
		"reset":         {fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		"eof":           {io.ErrUnexpectedEOF, true},
		"deadline":      {fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		"canceled":      {context.Canceled, true},
		"anything else": {errors.New("boom"), false},
	} {
		if got := Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable = %v, want %v", name, got, tc.want)
		}
	}
}
