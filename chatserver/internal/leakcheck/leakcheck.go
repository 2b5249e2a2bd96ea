// Package leakcheck fails a test binary that leaves goroutines running, as
// goleak.VerifyTestMain does, but gives goroutines that are already on their
// way out a bounded while to finish.
//
// goleak retries for about 0.4 s. Under `make test` both modules' tests, the
// race detector and the e2e cluster share two cores, and a connection's
// reader or a pool's health check that is returning can take longer than
// that to be scheduled: the package then failed with "found unexpected
// goroutines" although nothing leaked. A real leak never ends, so waiting up
// to Wait still reports it, only later.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Wait bounds how long Main waits for goroutines still running after the
// tests to end.
const Wait = 15 * time.Second

// Main runs the tests and, when they passed, fails the binary if goroutines
// other than those opts ignore are still running after Wait.
func Main(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "leakcheck:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Find is goleak.Find with the bounded wait: nil once only ignored
// goroutines run, else what still ran after Wait. For a TestMain with its
// own teardown.
func Find(opts ...goleak.Option) error {
	if err := settle(Wait, opts...); err != nil {
		return fmt.Errorf("goroutines still running %s after the tests: %w", Wait, err)
	}
	return nil
}

// settle polls goleak.Find until it finds nothing or wait has passed, and
// returns its last finding.
func settle(wait time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(wait)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
