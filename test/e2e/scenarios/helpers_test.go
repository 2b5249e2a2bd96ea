package scenarios

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// wait bounds every "until" in the scenarios.
const wait = 60 * time.Second

// connect opens a client to a chat server URL (ws://…/connection/websocket)
// that reconnects quickly, as a real client would behind a load balancer.
func connect(t *testing.T, url, token string) *centrifuge.Client {
	t.Helper()
	c := centrifuge.NewJsonClient(url, centrifuge.Config{
		Token: token, MinReconnectDelay: 100 * time.Millisecond, MaxReconnectDelay: time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second,
	})
	connected := make(chan struct{}, 1)
	c.OnConnected(func(centrifuge.ConnectedEvent) {
		select {
		case connected <- struct{}{}:
		default:
		}
	})
	if err := c.Connect(); err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	select {
	case <-connected:
	case <-time.After(wait):
		t.Fatalf("connect %s: not connected after %s", url, wait)
	}
	return c
}

// collector records, without dropping any, what a subscription delivers.
type collector struct {
	name string
	sub  *centrifuge.Subscription

	mu         sync.Mutex
	pubs       []centrifuge.PublicationEvent
	subscribed []centrifuge.SubscribedEvent
	// recovered counts publications delivered as the catch-up of a
	// resubscribe (offset at or below the stream top the reply reported).
	recovered   int
	recoverTill uint64
	changed     chan struct{}
}

func subscribe(t *testing.T, c *centrifuge.Client, name, channel string) *collector {
	t.Helper()
	col := &collector{name: name, changed: make(chan struct{}, 1)}
	sub, err := c.NewSubscription(channel, centrifuge.SubscriptionConfig{
		Recoverable: true, MinResubscribeDelay: 50 * time.Millisecond, MaxResubscribeDelay: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	col.sub = sub
	sub.OnPublication(func(e centrifuge.PublicationEvent) {
		col.mu.Lock()
		col.pubs = append(col.pubs, e)
		if e.Offset <= col.recoverTill {
			col.recovered++
		}
		col.mu.Unlock()
		col.poke()
	})
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) {
		col.mu.Lock()
		col.subscribed = append(col.subscribed, e)
		if e.WasRecovering && e.Recovered && e.StreamPosition != nil {
			col.recoverTill = e.StreamPosition.Offset
		}
		col.mu.Unlock()
		col.poke()
	})
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "subscribed", func() bool { return len(col.subscribedEvents()) > 0 })
	return col
}

func (c *collector) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) publications() []centrifuge.PublicationEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]centrifuge.PublicationEvent(nil), c.pubs...)
}

func (c *collector) subscribedEvents() []centrifuge.SubscribedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]centrifuge.SubscribedEvent(nil), c.subscribed...)
}

// resubscribes counts the resubscribes that recovered (after a reconnect).
func (c *collector) recoveries() int {
	n := 0
	for _, e := range c.subscribedEvents() {
		if e.WasRecovering && e.Recovered {
			n++
		}
	}
	return n
}

func (c *collector) has(data string) bool {
	for _, p := range c.publications() {
		if string(p.Data) == js(data) {
			return true
		}
	}
	return false
}

func (c *collector) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-c.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: timed out waiting for %s (has %d publications)", c.name, what, len(c.publications()))
		}
	}
}

// tally counts what publishers did.
type tally struct {
	sent, acked, failed atomic.Int64
	mu                  sync.Mutex
	ackedData           map[string]bool
	failedData          map[string]bool
	errs                map[string]int
}

func newTally() *tally {
	return &tally{ackedData: map[string]bool{}, failedData: map[string]bool{}, errs: map[string]int{}}
}

// errors summarises the publish errors so far.
func (tl *tally) errors() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return fmt.Sprint(tl.errs)
}

// js is data as the JSON string a publication carries.
func js(data string) string { return strconv.Quote(data) }

// publish publishes js(data) and records the outcome.
func (tl *tally) publish(sub *centrifuge.Subscription, data string) bool {
	data = js(data)
	tl.sent.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := sub.Publish(ctx, []byte(data)); err != nil {
		tl.failed.Add(1)
		msg := err.Error()
		if i := strings.IndexByte(msg, ':'); i > 0 && i < 40 {
			msg = msg[:i]
		}
		tl.mu.Lock()
		tl.errs[msg]++
		tl.failedData[data] = true
		tl.mu.Unlock()
		return false
	}
	tl.acked.Add(1)
	tl.mu.Lock()
	tl.ackedData[data] = true
	tl.mu.Unlock()
	return true
}

// run publishes "<prefix>-<n>" every pace until stop is closed.
func (tl *tally) run(sub *centrifuge.Subscription, prefix string, pace time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if !tl.publish(sub, fmt.Sprintf("%s-%d", prefix, i)) {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(pace)
		}
	}()
}

// fence publishes a last message (retrying until one attempt is
// acknowledged) and waits until every collector has the acknowledged one:
// what was committed before it has then been delivered or recovered
// everywhere. Attempts carry distinct data, since one reported failed may
// still have been committed.
func fence(t *testing.T, tl *tally, sub *centrifuge.Subscription, name string, cols ...*collector) {
	t.Helper()
	deadline := time.Now().Add(wait)
	data := name
	for attempt := 1; !tl.publish(sub, data); attempt++ {
		if time.Now().After(deadline) {
			t.Fatalf("the fence publication was never acknowledged: %s", tl.errors())
		}
		time.Sleep(100 * time.Millisecond)
		data = fmt.Sprintf("%s-%d", name, attempt)
	}
	for _, c := range cols {
		c.waitFor(t, "the fence "+data, func() bool { return c.has(data) })
	}
}

// snapshot is what collectors had received at one moment, cut at the
// highest offset all of them had reached: publications still arriving
// (an attempt reported failed may still have been committed) do not make
// one client look behind another.
type snapshot struct {
	name       string
	pubs       []centrifuge.PublicationEvent
	subscribed []centrifuge.SubscribedEvent
	recovered  int
}

func takeSnapshots(cols []*collector) []snapshot {
	snaps := make([]snapshot, len(cols))
	var common uint64
	for i, c := range cols {
		c.mu.Lock()
		snaps[i] = snapshot{name: c.name, pubs: append([]centrifuge.PublicationEvent(nil), c.pubs...),
			subscribed: append([]centrifuge.SubscribedEvent(nil), c.subscribed...), recovered: c.recovered}
		c.mu.Unlock()
		last := uint64(0)
		if n := len(snaps[i].pubs); n > 0 {
			last = snaps[i].pubs[n-1].Offset
		}
		if i == 0 || last < common {
			common = last
		}
	}
	for i := range snaps {
		n := len(snaps[i].pubs)
		for n > 0 && snaps[i].pubs[n-1].Offset > common {
			n--
		}
		snaps[i].pubs = snaps[i].pubs[:n]
	}
	return snaps
}

// check asserts a client saw its publications in offset order without gaps
// or duplicates, that no resubscribe failed to recover, and that every
// acknowledged publication up to the cut reached it.
func check(t *testing.T, tl *tally, s snapshot, acked map[string]bool) (lost int) {
	t.Helper()
	for _, e := range s.subscribed {
		if e.WasRecovering && !e.Recovered {
			t.Errorf("%s: a resubscribe could not recover (recovered=false)", s.name)
		}
	}
	seen := map[string]bool{}
	for i, p := range s.pubs {
		if i > 0 && p.Offset != s.pubs[i-1].Offset+1 {
			t.Errorf("%s: offset %d follows %d (a gap, a duplicate or a reordering)", s.name, p.Offset, s.pubs[i-1].Offset)
		}
		seen[string(p.Data)] = true
	}
	var missing []string
	for data := range acked {
		if !seen[data] {
			missing = append(missing, data)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: %d acknowledged publications never delivered: %v", s.name, len(missing), missing[:min(len(missing), 10)])
	}
	return len(missing)
}

// report checks what every client received after the fence and prints the
// scenario's numbers; it fails when anything acknowledged was lost, when two
// clients disagree on a publication's offset, or when one missed what
// others got.
func report(t *testing.T, scenario string, tl *tally, cols ...*collector) {
	t.Helper()
	snaps := takeSnapshots(cols)
	tl.mu.Lock()
	acked := make(map[string]bool, len(tl.ackedData))
	for k := range tl.ackedData {
		acked[k] = true
	}
	errs := ""
	if len(tl.errs) > 0 {
		errs = fmt.Sprintf(" %v", tl.errs)
	}
	failed := make(map[string]bool, len(tl.failedData))
	for k := range tl.failedData {
		failed[k] = true
	}
	tl.mu.Unlock()
	// One history: an offset means the same publication to every client,
	// and every client has every offset up to the cut.
	atOffset := map[uint64]string{}
	for _, s := range snaps {
		for _, p := range s.pubs {
			if prev, ok := atOffset[p.Offset]; ok && prev != string(p.Data) {
				t.Errorf("%s: offset %d is %s, another client got %s there", s.name, p.Offset, p.Data, prev)
			}
			atOffset[p.Offset] = string(p.Data)
		}
	}
	totalLost, recovered := 0, 0
	var parts []string
	for _, s := range snaps {
		if len(s.pubs) != len(atOffset) {
			t.Errorf("%s: %d publications, other clients got %d", s.name, len(s.pubs), len(atOffset))
		}
		totalLost += check(t, tl, s, acked)
		recovered += s.recovered
		parts = append(parts, fmt.Sprintf("%s=%d", s.name, len(s.pubs)))
	}
	// A publish reported failed may still have been committed: the client
	// cannot tell, and a retry would repeat it. Counted, not judged.
	failedDelivered := 0
	for _, p := range snaps[0].pubs {
		if failed[string(p.Data)] {
			failedDelivered++
		}
	}
	line := fmt.Sprintf("%s: sent=%d acknowledged=%d failed=%d%s (delivered anyway: %d) delivered={%s} recovered=%d lost=%d",
		scenario, tl.sent.Load(), tl.acked.Load(), tl.failed.Load(), errs, failedDelivered, strings.Join(parts, " "), recovered, totalLost)
	t.Log(line)
	fmt.Println("e2e " + line)
	if totalLost != 0 {
		t.Fatalf("lost = %d, want 0", totalLost)
	}
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s: %v", what, timeout, err)
}
