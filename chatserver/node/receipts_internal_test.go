package node

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
)

type published struct {
	channel string
	reads   []message.Receipt
}

// The batcher's timers are replaced by explicit flushes: an hour-long
// interval never fires during the test.
func TestReceiptBatcherMergesWithinInterval(t *testing.T) {
	var (
		mu  sync.Mutex
		out []published
	)
	b := newReceiptBatcher(time.Hour, func(ch string, reads []message.Receipt) {
		slices.SortFunc(reads, func(a, b message.Receipt) int { return strings.Compare(a.User, b.User) })
		mu.Lock()
		out = append(out, published{ch, reads})
		mu.Unlock()
	})
	defer b.stop()
	take := func() []published {
		mu.Lock()
		defer mu.Unlock()
		o := out
		out = nil
		return o
	}

	b.add("room:a", "bob", 2) // quiet channel: at once
	b.add("room:b", "bob", 7) // another channel has its own window
	if got := take(); len(got) != 2 || !slices.Equal(got[0].reads, []message.Receipt{{User: "bob", LastRead: 2}}) || got[1].channel != "room:b" {
		t.Fatalf("first receipts: %+v", got)
	}
	b.add("room:a", "bob", 5)
	b.add("room:a", "carol", 3)
	b.add("room:a", "bob", 4) // late and lower: bob stays at 5
	if got := take(); len(got) != 0 {
		t.Fatalf("published within the window: %+v", got)
	}
	b.flush("room:a") // the window ends
	if got := take(); len(got) != 1 || !slices.Equal(got[0].reads, []message.Receipt{{User: "bob", LastRead: 5}, {User: "carol", LastRead: 3}}) {
		t.Fatalf("merged receipts: %+v", got)
	}
	// A new window started with that batch: the next receipt waits again.
	b.add("room:a", "dave", 1)
	if got := take(); len(got) != 0 {
		t.Fatalf("published within the second window: %+v", got)
	}
	b.flush("room:a")
	b.flush("room:a") // nothing waited: the channel is quiet again
	take()
	b.mu.Lock()
	_, open := b.chans["room:a"]
	b.mu.Unlock()
	if open {
		t.Fatal("a quiet channel keeps its window (memory grows with every channel ever read)")
	}
	b.add("room:a", "erin", 1)
	if got := take(); len(got) != 1 {
		t.Fatalf("receipt in a quiet channel again: %+v", got)
	}
	b.stop()
	b.add("room:c", "bob", 1)
	if got := take(); len(got) != 0 {
		t.Fatalf("published after stop: %+v", got)
	}
}
