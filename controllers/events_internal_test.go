package controllers

import (
	"strings"
	"testing"
)

// The API server refuses an event whose note passes 1024 bytes, and the
// event is lost: a long Degraded message must be cut, not dropped.
func TestEventNotesFitTheAPILimit(t *testing.T) {
	if got := note("short"); got != "short" {
		t.Errorf("note(short) = %q", got)
	}
	exact := strings.Repeat("x", noteLimit)
	if got := note(exact); got != exact {
		t.Errorf("a note of exactly %d bytes was changed", noteLimit)
	}
	long := note(strings.Repeat("y", 5000))
	if len(long) != noteLimit || !strings.HasSuffix(long, "...") {
		t.Errorf("note of 5000 bytes: %d bytes, ends %q", len(long), long[len(long)-5:])
	}
}
