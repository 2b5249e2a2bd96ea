package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
	"github.com/parley-chat/parley/chatserver/store"
)

// Position reads racing appends on two replicas: each must see every
// publication acknowledged before it was asked for (a subscriber's reply
// position is read after its binding, and must not miss what was committed
// before), on the replica that appended and on another, and a channel never
// published to reads as offset 0 of its initial epoch. Kept from an attempt
// to group position reads (measured slower twice, dropped): whatever
// replaces the lone read must pass it.
func TestPositionsSeeEarlierAppends(t *testing.T) {
	replicas := twoReplicas(t, "parley_positions")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const channels, appends, readers = 16, 30, 24
	acked := make([]atomic.Uint64, channels)
	opts := store.AppendOptions{HistorySize: 100, HistoryTTL: time.Hour}
	var wg sync.WaitGroup
	errs := make(chan error, channels+readers)
	for c := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appends {
				res, err := replicas[i%2].Append(ctx, fmt.Sprintf("room:%d", c), &message.Publication{Data: []byte(`{}`)}, opts)
				if err != nil {
					errs <- err
					return
				}
				acked[c].Store(res.Position.Offset)
			}
		}()
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appends {
				c := (r + i) % channels
				before := acked[c].Load()
				pos, err := replicas[r%2].Position(ctx, fmt.Sprintf("room:%d", c))
				if err != nil {
					errs <- err
					return
				}
				if pos.Offset < before {
					errs <- fmt.Errorf("room:%d read at offset %d after offset %d was acknowledged", c, pos.Offset, before)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for c := range channels {
		pos, err := replicas[c%2].Position(ctx, fmt.Sprintf("room:%d", c))
		if err != nil {
			t.Fatal(err)
		}
		if pos.Offset != appends {
			t.Fatalf("room:%d at offset %d after %d appends", c, pos.Offset, appends)
		}
	}
	pos, err := replicas[0].Position(ctx, "room:quiet")
	if err != nil {
		t.Fatal(err)
	}
	_, hpos, err := replicas[1].History(ctx, "room:quiet", store.HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pos.Offset != 0 || pos.Epoch == "" || pos != hpos {
		t.Fatalf("a channel never published to reads %+v, history says %+v", pos, hpos)
	}
}
