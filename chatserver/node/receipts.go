package node

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
)

// ReceiptInterval bounds how often one node broadcasts read receipts in one
// channel. The first receipt in a quiet channel goes out at once; those that
// follow within the interval are merged (the furthest offset per user) into
// one event at its end. Without it every member reading every message would
// cost members² pushes per message.
const ReceiptInterval = 500 * time.Millisecond

// ReadEvent is the data of a read-receipt event: a publication tagged
// type=read with offset 0, broadcast to the channel and never stored, like a
// typing indicator.
type ReadEvent struct {
	Reads []message.Receipt `json:"reads"`
}

// receiptBatcher merges read receipts per channel before they are broadcast.
type receiptBatcher struct {
	interval time.Duration
	publish  func(channel string, reads []message.Receipt)

	mu      sync.Mutex
	stopped bool
	chans   map[string]*receiptWindow
}

// receiptWindow exists while a channel is within interval of its last
// broadcast: receipts wait in pending for the timer.
type receiptWindow struct {
	pending map[string]uint64 // user → furthest offset
	timer   *time.Timer
}

func newReceiptBatcher(interval time.Duration, publish func(string, []message.Receipt)) *receiptBatcher {
	return &receiptBatcher{interval: interval, publish: publish, chans: map[string]*receiptWindow{}}
}

// add queues user's receipt in channel, broadcasting at once when the
// channel had no broadcast within the interval.
func (b *receiptBatcher) add(channel, user string, offset uint64) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	if w := b.chans[channel]; w != nil {
		if offset > w.pending[user] {
			w.pending[user] = offset
		}
		b.mu.Unlock()
		return
	}
	b.chans[channel] = &receiptWindow{pending: map[string]uint64{}, timer: time.AfterFunc(b.interval, func() { b.flush(channel) })}
	b.mu.Unlock()
	b.publish(channel, []message.Receipt{{User: user, LastRead: offset}})
}

// flush ends a channel's window: what waited goes out and a new window
// starts, or the channel is quiet again.
func (b *receiptBatcher) flush(channel string) {
	b.mu.Lock()
	w := b.chans[channel]
	if w == nil || b.stopped {
		b.mu.Unlock()
		return
	}
	if len(w.pending) == 0 {
		delete(b.chans, channel)
		b.mu.Unlock()
		return
	}
	reads := make([]message.Receipt, 0, len(w.pending))
	for u, off := range w.pending {
		reads = append(reads, message.Receipt{User: u, LastRead: off})
	}
	w.pending = map[string]uint64{}
	w.timer = time.AfterFunc(b.interval, func() { b.flush(channel) })
	b.mu.Unlock()
	b.publish(channel, reads)
}

// stop drops what waits and cancels the timers.
func (b *receiptBatcher) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	for ch, w := range b.chans {
		w.timer.Stop()
		delete(b.chans, ch)
	}
}

// publishReceipts broadcasts a read event (never stored).
func (n *Node) publishReceipts(channel string, reads []message.Receipt) {
	data, err := json.Marshal(ReadEvent{Reads: reads})
	if err != nil {
		n.log.Warn("encode read receipts", "channel", channel, "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.PublishEphemeral(ctx, channel, data, nil, map[string]string{TagType: "read"}); err != nil {
		n.log.Debug("broadcast read receipts", "channel", channel, "error", err)
	}
}
