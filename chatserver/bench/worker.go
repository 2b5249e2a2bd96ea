package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sys/unix"
)

// Job is one load-generating worker's share of a scenario. Subscriber
// connection i (First <= i < First+Count) belongs to user "u<i>", connects to
// Endpoint(i) from source address 127.0.0.(SourceBase + i%SourceAddrs), and
// subscribes to room i%Rooms.
type Job struct {
	Worker    int      `json:"worker"`
	Endpoints []string `json:"endpoints"`
	// Secret is the HS256 key both servers verify connection tokens with.
	Secret        string `json:"secret"`
	ChannelPrefix string `json:"channelPrefix"` // room r is ChannelPrefix + r
	Rooms         int    `json:"rooms"`
	First         int    `json:"first"`
	Count         int    `json:"count"`
	// Publishers are extra connections that publish without subscribing,
	// round-robin over rooms. PublishFromSubscribers makes random subscribers
	// publish to their own room instead.
	Publishers             int  `json:"publishers"`
	PublisherFirst         int  `json:"publisherFirst"`
	PublishFromSubscribers bool `json:"publishFromSubscribers"`
	PayloadBytes           int  `json:"payloadBytes"`
	SourceBase             int  `json:"sourceBase"`
	SourceAddrs            int  `json:"sourceAddrs"`
	// ConnectConcurrency bounds connection attempts in flight.
	ConnectConcurrency int `json:"connectConcurrency"`
	// PublishConcurrency bounds publish commands awaiting their reply.
	PublishConcurrency int `json:"publishConcurrency"`
	// ConnectTimeout bounds the whole connect phase of this worker.
	ConnectTimeout time.Duration `json:"connectTimeout"`
}

// Command is what the coordinator asks a worker to do.
type Command struct {
	// Op is connect, rate, snapshot, drop or close.
	Op string `json:"op"`
	// Rate is this worker's publications per second (op rate; 0 stops).
	Rate float64 `json:"rate,omitempty"`
	// Reset zeroes the latency histograms after a snapshot.
	Reset bool `json:"reset,omitempty"`
}

// Reply answers a Command.
type Reply struct {
	Op      string         `json:"op"`
	Error   string         `json:"error,omitempty"`
	Connect *ConnectReport `json:"connect,omitempty"`
	Stats   *Stats         `json:"stats,omitempty"`
	Dropped int            `json:"dropped,omitempty"`
}

// ConnectReport is the outcome of a worker's connect phase.
type ConnectReport struct {
	Attempted  int           `json:"attempted"`
	Subscribed int           `json:"subscribed"`
	Failed     int           `json:"failed"`
	FirstError string        `json:"firstError,omitempty"`
	Elapsed    time.Duration `json:"elapsedNs"`
	// Latency is connect start → subscribed, per connection.
	Latency HistSnapshot `json:"latency"`
}

// Stats are a worker's counters since it started (histograms since the last reset).
type Stats struct {
	At            time.Time        `json:"at"`
	Connected     int64            `json:"connected"`
	Subscribed    int64            `json:"subscribed"`
	Delivered     int64            `json:"delivered"`
	PublishSent   int64            `json:"publishSent"`
	Published     int64            `json:"published"`
	PublishErrors int64            `json:"publishErrors"`
	PublishDrops  int64            `json:"publishDrops"` // pacer releases with every publish slot busy
	Gaps          int64            `json:"gaps"`         // publications missing between offsets seen
	Duplicates    int64            `json:"duplicates"`   // offsets seen twice or going back
	BadPayloads   int64            `json:"badPayloads"`
	WasRecovering int64            `json:"wasRecovering"`
	Recovered     int64            `json:"recovered"`
	Disconnects   map[string]int64 `json:"disconnects,omitempty"` // by code, after the first connect
	Errors        int64            `json:"errors"`
	FirstError    string           `json:"firstError,omitempty"`
	PubsPerRoom   []int64          `json:"pubsPerRoom,omitempty"` // acknowledged publications per room
	Latency       HistSnapshot     `json:"latency"`
	PublishRTT    HistSnapshot     `json:"publishRtt"`
}

// Add merges o into s (counters add up, histograms merge, At is the latest).
func (s *Stats) Add(o *Stats) {
	if o.At.After(s.At) {
		s.At = o.At
	}
	s.Connected += o.Connected
	s.Subscribed += o.Subscribed
	s.Delivered += o.Delivered
	s.PublishSent += o.PublishSent
	s.Published += o.Published
	s.PublishErrors += o.PublishErrors
	s.PublishDrops += o.PublishDrops
	s.Gaps += o.Gaps
	s.Duplicates += o.Duplicates
	s.BadPayloads += o.BadPayloads
	s.WasRecovering += o.WasRecovering
	s.Recovered += o.Recovered
	s.Errors += o.Errors
	if s.FirstError == "" {
		s.FirstError = o.FirstError
	}
	for k, v := range o.Disconnects {
		if s.Disconnects == nil {
			s.Disconnects = map[string]int64{}
		}
		s.Disconnects[k] += v
	}
	for len(s.PubsPerRoom) < len(o.PubsPerRoom) {
		s.PubsPerRoom = append(s.PubsPerRoom, 0)
	}
	for i, v := range o.PubsPerRoom {
		s.PubsPerRoom[i] += v
	}
	s.Latency = s.Latency.Merge(o.Latency)
	s.PublishRTT = s.PublishRTT.Merge(o.PublishRTT)
}

// DisconnectCount sums disconnects over codes.
func (s *Stats) DisconnectCount() int64 {
	var n int64
	for _, v := range s.Disconnects {
		n += v
	}
	return n
}

// Worker runs one Job's connections. Its methods are called by one goroutine
// (Serve), the clients' callbacks by theirs.
type Worker struct {
	job   Job
	conns []*conn
	pubs  []*conn

	connected, subscribed                              atomic.Int64
	delivered, pubSent, published, pubErrors, pubDrops atomic.Int64
	gaps, dups, badPayloads, wasRecovering, recovered  atomic.Int64
	errorsN                                            atomic.Int64
	pubsPerRoom                                        []atomic.Int64
	latency, pubRTT                                    Histogram

	mu          sync.Mutex
	disconnects map[string]int64
	firstError  string

	pubCtx    context.Context
	pubCancel context.CancelFunc
	pubDone   chan struct{}
	pubSlots  chan struct{}
}

// conn is one client connection and what its callbacks track.
type conn struct {
	w      *Worker
	index  int
	room   int
	client *centrifuge.Client
	sub    *centrifuge.Subscription

	mu         sync.Mutex
	netConn    net.Conn
	everUp     bool // connected at least once: later connecting events are disconnects
	isSub      bool
	lastOffset uint64
	positioned bool
	ready      chan struct{} // closed on the first subscribed (or, for publishers, connected) event
	readyOnce  sync.Once
	failed     chan string
	failOnce   sync.Once
}

// NewWorker prepares a worker; nothing connects until the connect command.
func NewWorker(job Job) (*Worker, error) {
	if len(job.Endpoints) == 0 {
		return nil, errors.New("job has no endpoints")
	}
	if job.Rooms <= 0 {
		return nil, errors.New("job needs rooms > 0")
	}
	if job.SourceAddrs <= 0 {
		job.SourceAddrs = 1
	}
	if job.SourceBase <= 0 {
		job.SourceBase = 1
	}
	if job.SourceBase+job.SourceAddrs > 255 {
		return nil, fmt.Errorf("source addresses 127.0.0.%d..%d out of range", job.SourceBase, job.SourceBase+job.SourceAddrs-1)
	}
	if job.ConnectConcurrency <= 0 {
		job.ConnectConcurrency = 100
	}
	if job.PublishConcurrency <= 0 {
		job.PublishConcurrency = 256
	}
	if job.ConnectTimeout <= 0 {
		job.ConnectTimeout = 2 * time.Minute
	}
	w := &Worker{job: job, disconnects: map[string]int64{}, pubsPerRoom: make([]atomic.Int64, job.Rooms),
		pubSlots: make(chan struct{}, job.PublishConcurrency)}
	return w, nil
}

// Channel names room r.
func (j Job) Channel(r int) string { return j.ChannelPrefix + strconv.Itoa(r) }

func (w *Worker) token(user string) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "exp": time.Now().Add(6 * time.Hour).Unix(),
	}).SignedString([]byte(w.job.Secret))
}

func (w *Worker) noteError(err string) {
	w.errorsN.Add(1)
	w.mu.Lock()
	if w.firstError == "" {
		w.firstError = err
	}
	w.mu.Unlock()
}

func (w *Worker) noteDisconnect(code uint32) {
	w.mu.Lock()
	w.disconnects[strconv.FormatUint(uint64(code), 10)]++
	w.mu.Unlock()
}

// setBindNoPort lets the kernel pick the source port at connect time (per
// destination) instead of at bind time, so many connections from one source
// address do not exhaust its ports against unrelated destinations.
func setBindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Endpoint is the node connection i dials: a room's members go round the
// nodes in turn, as a load balancer that knows nothing of rooms spreads
// them (with i%len(Endpoints) and an even room count, every member of a
// room would sit on one node, and no publication would cross between
// nodes).
func (j Job) Endpoint(i int) string {
	if j.Rooms <= 0 {
		return j.Endpoints[i%len(j.Endpoints)]
	}
	return j.Endpoints[(i%j.Rooms+i/j.Rooms)%len(j.Endpoints)]
}

// SourceAddr is the loopback address connection i dials from.
func (j Job) SourceAddr(i int) net.IP {
	return net.IPv4(127, 0, 0, byte(j.SourceBase+i%j.SourceAddrs))
}

func (w *Worker) newConn(index int, user string, subscribe bool) (*conn, error) {
	c := &conn{w: w, index: index, room: index % w.job.Rooms, ready: make(chan struct{}), failed: make(chan string, 1)}
	tok, err := w.token(user)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: w.job.SourceAddr(index)}, Control: setBindNoPort, Timeout: 10 * time.Second}
	cfg := centrifuge.Config{
		Token:            tok,
		Name:             "chatbench",
		ReadTimeout:      10 * time.Second,
		WriteTimeout:     5 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.mu.Lock()
				c.netConn = nc
				c.mu.Unlock()
			}
			return nc, err
		},
	}
	c.client = centrifuge.NewJsonClient(w.job.Endpoint(index), cfg)
	c.client.OnConnected(func(centrifuge.ConnectedEvent) {
		w.connected.Add(1)
		c.mu.Lock()
		c.everUp = true
		c.mu.Unlock()
		if !subscribe {
			c.readyOnce.Do(func() { close(c.ready) })
		}
	})
	c.client.OnConnecting(func(e centrifuge.ConnectingEvent) {
		c.mu.Lock()
		up := c.everUp
		c.mu.Unlock()
		if up {
			w.connected.Add(-1)
			w.noteDisconnect(e.Code)
		}
	})
	c.client.OnDisconnected(func(e centrifuge.DisconnectedEvent) {
		c.mu.Lock()
		up := c.everUp
		c.everUp = false
		c.mu.Unlock()
		if up {
			w.connected.Add(-1)
			w.noteDisconnect(e.Code)
		}
		c.failOnce.Do(func() { c.failed <- fmt.Sprintf("disconnected: %d %s", e.Code, e.Reason) })
	})
	c.client.OnError(func(e centrifuge.ErrorEvent) {
		w.noteError(e.Error.Error())
	})
	if subscribe {
		sub, err := c.client.NewSubscription(w.job.Channel(c.room))
		if err != nil {
			return nil, err
		}
		c.sub = sub
		sub.OnSubscribed(c.onSubscribed)
		sub.OnSubscribing(func(centrifuge.SubscribingEvent) { c.setSubscribed(false) })
		sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) {
			c.setSubscribed(false)
			c.failOnce.Do(func() { c.failed <- fmt.Sprintf("unsubscribed: %d %s", e.Code, e.Reason) })
		})
		sub.OnError(func(e centrifuge.SubscriptionErrorEvent) { w.noteError("subscription: " + e.Error.Error()) })
		sub.OnPublication(c.onPublication)
	}
	return c, nil
}

func (c *conn) setSubscribed(on bool) {
	c.mu.Lock()
	was := c.isSub
	c.isSub = on
	c.mu.Unlock()
	switch {
	case on && !was:
		c.w.subscribed.Add(1)
	case !on && was:
		c.w.subscribed.Add(-1)
	}
}

func (c *conn) onSubscribed(e centrifuge.SubscribedEvent) {
	c.mu.Lock()
	if e.WasRecovering {
		c.w.wasRecovering.Add(1)
		if e.Recovered {
			c.w.recovered.Add(1)
		}
	}
	// A fresh subscription, or a failed recovery, restarts offset tracking
	// at the stream position; a successful recovery continues it.
	if e.StreamPosition != nil && (!c.positioned || (e.WasRecovering && !e.Recovered)) {
		c.lastOffset = e.StreamPosition.Offset
		c.positioned = true
	}
	c.mu.Unlock()
	c.setSubscribed(true)
	c.readyOnce.Do(func() { close(c.ready) })
}

func (c *conn) onPublication(e centrifuge.PublicationEvent) {
	now := time.Now()
	w := c.w
	// Latency first, then the delivery count: a snapshot that sees N deliveries
	// then holds at least N latency samples.
	if sent, err := DecodeSendTime(e.Data); err == nil {
		w.latency.Record(now.Sub(sent))
	} else {
		w.badPayloads.Add(1)
	}
	w.delivered.Add(1)
	if e.Offset == 0 {
		return
	}
	c.mu.Lock()
	switch {
	case !c.positioned:
		c.positioned = true
	case e.Offset == c.lastOffset+1:
	case e.Offset > c.lastOffset+1:
		w.gaps.Add(int64(e.Offset - c.lastOffset - 1))
	default:
		w.dups.Add(1)
	}
	if e.Offset > c.lastOffset {
		c.lastOffset = e.Offset
	}
	c.mu.Unlock()
}

// connect opens every connection of the job and waits for each to be
// subscribed (publishers: connected).
func (w *Worker) connect() *ConnectReport {
	rep := &ConnectReport{}
	var mu sync.Mutex
	var lat Histogram
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), w.job.ConnectTimeout)
	defer cancel()
	sem := make(chan struct{}, w.job.ConnectConcurrency)
	var wg sync.WaitGroup
	fail := func(msg string) {
		mu.Lock()
		rep.Failed++
		if rep.FirstError == "" {
			rep.FirstError = msg
		}
		mu.Unlock()
	}
	open := func(c *conn) {
		defer wg.Done()
		defer func() { <-sem }()
		t0 := time.Now()
		if err := c.client.Connect(); err != nil {
			fail(err.Error())
			return
		}
		if c.sub != nil {
			if err := c.sub.Subscribe(); err != nil {
				fail(err.Error())
				return
			}
		}
		select {
		case <-c.ready:
			lat.Record(time.Since(t0))
			mu.Lock()
			rep.Subscribed++
			mu.Unlock()
		case msg := <-c.failed:
			fail(msg)
		case <-ctx.Done():
			fail("connect phase timed out")
		}
	}
	build := func(index int, user string, subscribe bool) (*conn, bool) {
		c, err := w.newConn(index, user, subscribe)
		if err != nil {
			fail(err.Error())
			return nil, false
		}
		return c, true
	}
	for k := 0; k < w.job.Publishers; k++ {
		idx := w.job.PublisherFirst + k
		if c, ok := build(idx, "pub"+strconv.Itoa(idx), false); ok {
			w.pubs = append(w.pubs, c)
			rep.Attempted++
			sem <- struct{}{}
			wg.Add(1)
			go open(c)
		}
	}
	for i := w.job.First; i < w.job.First+w.job.Count; i++ {
		if c, ok := build(i, "u"+strconv.Itoa(i), true); ok {
			w.conns = append(w.conns, c)
			rep.Attempted++
			sem <- struct{}{}
			wg.Add(1)
			go open(c)
		}
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	rep.Latency = lat.Snapshot()
	return rep
}

// setRate (re)starts publishing at rate publications per second.
func (w *Worker) setRate(rate float64) error {
	if w.pubCancel != nil {
		w.pubCancel()
		<-w.pubDone
		w.pubCancel = nil
	}
	if rate <= 0 {
		return nil
	}
	senders := w.pubs
	if w.job.PublishFromSubscribers {
		senders = w.conns
	}
	if len(senders) == 0 {
		return errors.New("rate set on a worker without publishers")
	}
	w.pubCtx, w.pubCancel = context.WithCancel(context.Background())
	w.pubDone = make(chan struct{})
	go w.publishLoop(w.pubCtx, rate, senders)
	return nil
}

func (w *Worker) publishLoop(ctx context.Context, rate float64, senders []*conn) {
	defer close(w.pubDone)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	p := NewPacer(rate, time.Now())
	p.MaxBurst = int64(w.job.PublishConcurrency)
	rng := rand.New(rand.NewPCG(uint64(w.job.Worker), uint64(time.Now().UnixNano())))
	var seq int
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		for n := p.Due(time.Now()); n > 0; n-- {
			var c *conn
			var room int
			if w.job.PublishFromSubscribers {
				c = senders[rng.IntN(len(senders))]
				room = c.room
			} else {
				c = senders[seq%len(senders)]
				room = seq % w.job.Rooms
			}
			seq++
			select {
			case w.pubSlots <- struct{}{}:
			default:
				w.pubDrops.Add(1)
				continue
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer func() { <-w.pubSlots }()
				w.publish(c, room)
			}()
		}
		timer.Reset(max(time.Until(p.Next()), 0))
	}
}

func (w *Worker) publish(c *conn, room int) {
	buf := make([]byte, 0, max(w.job.PayloadBytes, minPayload))
	t0 := time.Now()
	data := EncodePayload(buf, t0, w.job.PayloadBytes)
	w.pubSent.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.client.Publish(ctx, w.job.Channel(room), data); err != nil {
		w.pubErrors.Add(1)
		w.noteError("publish: " + err.Error())
		return
	}
	w.pubRTT.Record(time.Since(t0))
	w.published.Add(1)
	w.pubsPerRoom[room].Add(1)
}

// drop closes every subscriber's TCP connection at once, as a network failure
// would; the clients reconnect on their own and recover their subscriptions.
func (w *Worker) drop() int {
	n := 0
	for _, c := range w.conns {
		c.mu.Lock()
		nc := c.netConn
		c.mu.Unlock()
		if nc != nil {
			_ = nc.Close()
			n++
		}
	}
	return n
}

func (w *Worker) stats(reset bool) *Stats {
	s := &Stats{
		At: time.Now(), Connected: w.connected.Load(), Subscribed: w.subscribed.Load(),
		Delivered: w.delivered.Load(), PublishSent: w.pubSent.Load(), Published: w.published.Load(),
		PublishErrors: w.pubErrors.Load(), PublishDrops: w.pubDrops.Load(), Gaps: w.gaps.Load(),
		Duplicates: w.dups.Load(), BadPayloads: w.badPayloads.Load(), WasRecovering: w.wasRecovering.Load(),
		Recovered: w.recovered.Load(), Errors: w.errorsN.Load(),
		Latency: w.latency.Snapshot(), PublishRTT: w.pubRTT.Snapshot(),
	}
	w.mu.Lock()
	s.FirstError = w.firstError
	s.Disconnects = map[string]int64{}
	for k, v := range w.disconnects {
		s.Disconnects[k] = v
	}
	w.mu.Unlock()
	s.PubsPerRoom = make([]int64, len(w.pubsPerRoom))
	for i := range w.pubsPerRoom {
		s.PubsPerRoom[i] = w.pubsPerRoom[i].Load()
	}
	if reset {
		w.latency.Reset()
		w.pubRTT.Reset()
	}
	return s
}

// Close stops publishing and closes every client.
func (w *Worker) Close() {
	_ = w.setRate(0)
	var wg sync.WaitGroup
	for _, group := range [][]*conn{w.pubs, w.conns} {
		for _, c := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.client.Close()
			}()
		}
	}
	wg.Wait()
}

// Handle runs one command.
func (w *Worker) Handle(cmd Command) Reply {
	r := Reply{Op: cmd.Op}
	switch cmd.Op {
	case "connect":
		r.Connect = w.connect()
	case "rate":
		if err := w.setRate(cmd.Rate); err != nil {
			r.Error = err.Error()
		}
	case "snapshot":
		r.Stats = w.stats(cmd.Reset)
	case "drop":
		r.Dropped = w.drop()
	case "close":
		w.Close()
	default:
		r.Error = fmt.Sprintf("unknown op %q", cmd.Op)
	}
	return r
}
