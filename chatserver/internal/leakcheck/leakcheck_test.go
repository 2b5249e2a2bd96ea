package leakcheck

import (
	"testing"
	"time"
)

// A goroutine that ends within the wait is not a leak; one that outlives it is.
func TestSettle(t *testing.T) {
	done := make(chan struct{})
	go func() { time.Sleep(600 * time.Millisecond); close(done) }() // longer than goleak's own ~0.4 s
	if err := settle(5 * time.Second); err != nil {
		t.Fatalf("a goroutine ending after 0.6 s reported as a leak: %v", err)
	}
	<-done

	stop := make(chan struct{})
	go func() { <-stop }()
	err := settle(300 * time.Millisecond)
	close(stop)
	if err == nil {
		t.Fatal("a goroutine blocked past the wait was not reported")
	}
	if err := settle(5 * time.Second); err != nil {
		t.Fatalf("after it ended: %v", err)
	}
}
