package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Target is a server under test as the scenarios see it: where to connect,
// which processes to measure.
type Target struct {
	Name      string
	Kind      string
	Backend   string
	Endpoints []string
	PIDs      []int
	// MetricsURLs and PprofURLs per node ("" when not available).
	MetricsURLs []string
	PprofURLs   []string
	// AuxNames are process names of the shared services behind the target
	// (their CPU is reported separately; other users of those services add noise).
	AuxNames []string
}

// TargetOf describes a started server.
func TargetOf(s *Server) Target {
	t := Target{Name: s.Name, Kind: s.Kind, Backend: s.Backend, Endpoints: s.Endpoints(), PIDs: s.PIDs()}
	for _, n := range s.Nodes {
		t.MetricsURLs = append(t.MetricsURLs, n.MetricsURL)
		t.PprofURLs = append(t.PprofURLs, n.PprofURL)
	}
	switch s.Backend {
	case "RabbitMQ + PostgreSQL":
		t.AuxNames = []string{"beam.smp", "postgres"}
	case backendRedis, backendDurableRedis:
		t.AuxNames = []string{"redis-server"}
	}
	return t
}

// Options are the knobs shared by the scenarios.
type Options struct {
	// WorkerExe and WorkerArgs start a worker process (nil: in-process).
	WorkerExe  string
	WorkerArgs []string
	Secret     string
	RunID      string
	// OutDir receives profiles; empty skips profiling.
	OutDir       string
	PayloadBytes int
	SourceAddrs  int
	// ConnsPerWorker caps connections per worker process (file limit).
	ConnsPerWorker int
	Log            io.Writer
	// Scale multiplies connection counts (1 = the sizes); tests use less.
	Scale float64
	// Quick shortens windows (tests).
	Quick bool
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

func (o Options) scaled(n int) int { return max(1, int(math.Round(float64(n)*o.scale()))) }

func (o Options) scale() float64 {
	if o.Scale <= 0 {
		return 1
	}
	return o.Scale
}

func (o Options) window(d time.Duration) time.Duration {
	if o.Quick {
		return d / 10
	}
	return d
}

func (o Options) workersFor(conns int) int {
	per := o.ConnsPerWorker
	if per <= 0 {
		per = 5000
	}
	return max(2, (conns+per-1)/per)
}

// Window is one measured interval under a fixed offered load.
type Window struct {
	// OfferedPubs is the target publish rate (publications/s).
	OfferedPubs float64 `json:"offeredPubsPerSec"`
	// OfferedMsgs is the delivery rate that would follow (publications × subscribers per room).
	OfferedMsgs float64 `json:"offeredMsgsPerSec"`
	Seconds     float64 `json:"seconds"`
	Published   int64   `json:"published"`
	Delivered   int64   `json:"delivered"`
	// DeliveredPerSec is the measured delivery rate.
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	Latency         Summary `json:"latency"`
	PublishRTT      Summary `json:"publishRtt"`
	// ServerCPU is the server processes' utime+stime over the window.
	ServerCPUSec float64 `json:"serverCpuSec"`
	// CPUPerMsgUs is server CPU per delivered message, microseconds;
	// SysPerMsgUs the part of it spent in the kernel (stime).
	CPUPerMsgUs float64 `json:"cpuPerMsgUs"`
	SysPerMsgUs float64 `json:"sysPerMsgUs"`
	// AuxCPUSec is the backing services' CPU over the window (shared, noisy).
	AuxCPUSec   float64 `json:"auxCpuSec"`
	AuxPerMsgUs float64 `json:"auxCpuPerMsgUs"`
	// AuxPerPubUs is the backing services' CPU per publication, and
	// AuxPerPubUsByName the same per service (process name: beam.smp is
	// RabbitMQ, postgres PostgreSQL, redis-server Redis).
	AuxPerPubUs       float64            `json:"auxCpuPerPubUs"`
	AuxPerPubUsByName map[string]float64 `json:"auxCpuPerPubUsByName,omitempty"`
	ServerRSS         int64              `json:"serverRssBytes"`
	// ClientCPUSec is the load generator's CPU over the window (its worker
	// processes): on a small machine it competes with the server.
	ClientCPUSec  float64 `json:"clientCpuSec"`
	PublishErrors int64   `json:"publishErrors"`
	PublishDrops  int64   `json:"publishDrops"`
	Disconnects   int64   `json:"disconnects"`
	Sustained     bool    `json:"sustained"`
	Retry         bool    `json:"retry,omitempty"` // the second try of a step
	Why           string  `json:"why,omitempty"`
	Profile       string  `json:"profile,omitempty"`
	// Stages is where the server says its publications spent their time
	// (parley_publish_stage_seconds over the window, all nodes: append is
	// the store's commit, broker the confirmed publish). Bucket estimates;
	// absent for servers without the histogram.
	Stages map[string]Summary `json:"stages,omitempty"`
}

// measurer samples a target's processes and a fleet's counters together.
type measurer struct {
	t       Target
	f       *Fleet
	stats   *Stats
	procs   ProcTotals
	aux     ProcTotals
	auxPIDs []int
	// auxName names each aux process (its comm).
	auxName map[int]string
	client  ProcTotals
	at      time.Time
	// stages is the last scrape of the servers' stage histograms (nil when
	// it failed: the window then reports none rather than a wrong delta).
	stages map[string]promHist
}

func newMeasurer(t Target, f *Fleet) (*measurer, error) {
	m := &measurer{t: t, f: f}
	if len(t.AuxNames) > 0 {
		pids, err := PIDsByName(t.AuxNames...)
		if err != nil {
			return nil, err
		}
		m.auxPIDs = pids
		m.auxName = map[int]string{}
		for _, pid := range pids {
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
				m.auxName[pid] = strings.TrimSpace(string(comm))
			}
		}
	}
	return m, m.mark()
}

// mark starts a window: it resets the fleet's histograms.
func (m *measurer) mark() error {
	s, err := m.f.Snapshot(true)
	if err != nil {
		return err
	}
	p, err := ReadProcs(m.t.PIDs)
	if err != nil {
		return fmt.Errorf("%s: %w", m.t.Name, err)
	}
	m.stats, m.procs, m.aux, m.client, m.at = s, p, ReadProcsLenient(m.auxPIDs), ReadProcsLenient(m.f.PIDs()), time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.stages, _ = scrapeStages(ctx, m.t.MetricsURLs)
	return nil
}

// window ends the current window (and starts the next).
func (m *measurer) window(offeredPubs float64, subsPerPub float64) (Window, error) {
	prevStats, prevProcs, prevAux, prevClient, prevAt, prevStages := m.stats, m.procs, m.aux, m.client, m.at, m.stages
	if err := m.mark(); err != nil {
		return Window{}, err
	}
	s := m.stats
	secs := m.at.Sub(prevAt).Seconds()
	w := Window{
		OfferedPubs: offeredPubs, OfferedMsgs: offeredPubs * subsPerPub, Seconds: secs,
		Published: s.Published - prevStats.Published, Delivered: s.Delivered - prevStats.Delivered,
		Latency: s.Latency.Summary(), PublishRTT: s.PublishRTT.Summary(),
		ServerCPUSec:  CPUDelta(prevProcs, m.procs).Seconds(),
		AuxCPUSec:     CPUDelta(prevAux, m.aux).Seconds(),
		ServerRSS:     m.procs.RSS,
		ClientCPUSec:  CPUDelta(prevClient, m.client).Seconds(),
		PublishErrors: s.PublishErrors - prevStats.PublishErrors, PublishDrops: s.PublishDrops - prevStats.PublishDrops,
		Disconnects: s.DisconnectCount() - prevStats.DisconnectCount(),
	}
	w.DeliveredPerSec = float64(w.Delivered) / secs
	if prevStages != nil && m.stages != nil {
		w.Stages = stagesSince(prevStages, m.stages)
	}
	if w.Delivered > 0 {
		w.CPUPerMsgUs = w.ServerCPUSec * 1e6 / float64(w.Delivered)
		w.SysPerMsgUs = SysDelta(prevProcs, m.procs).Seconds() * 1e6 / float64(w.Delivered)
		w.AuxPerMsgUs = w.AuxCPUSec * 1e6 / float64(w.Delivered)
	}
	if w.Published > 0 {
		w.AuxPerPubUs = w.AuxCPUSec * 1e6 / float64(w.Published)
		w.AuxPerPubUsByName = m.byNameSince(prevAux, m.aux, float64(w.Published))
	}
	return w, nil
}

// byNameSince is the backing services' CPU from before to after, in µs per
// unit (n units), by process name.
func (m *measurer) byNameSince(before, after ProcTotals, n float64) map[string]float64 {
	var out map[string]float64
	for pid, a := range after.ByPID {
		name := m.auxName[pid]
		if name == "" {
			continue
		}
		if out == nil {
			out = map[string]float64{}
		}
		out[name] += (a.CPU - before.ByPID[pid].CPU).Seconds() * 1e6 / n
	}
	return out
}

func (o Options) fleet(l Layout) (*Fleet, error) {
	l.Secret = o.Secret
	l.PayloadBytes = o.PayloadBytes
	l.SourceAddrs = o.SourceAddrs
	if l.Workers == 0 {
		l.Workers = o.workersFor(l.Subscribers + l.Publishers)
	}
	return StartFleet(o.WorkerExe, o.WorkerArgs, Split(l))
}

// ConnectResult summarises a fleet's connect phase.
type ConnectResult struct {
	Connections int     `json:"connections"`
	Subscribed  int     `json:"subscribed"`
	Failed      int     `json:"failed"`
	FirstError  string  `json:"firstError,omitempty"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"perSec"`
	Latency     Summary `json:"latency"`
	// CPU per subscribed connection over the connect phase: the servers',
	// the backing services' (in all and by process name) and the
	// benchmark clients'. It says where a slower connect rate goes when the
	// machine's cores are the limit (connects run 100 at a time per worker).
	ServerCPUPerConnUs float64            `json:"serverCpuPerConnUs,omitempty"`
	AuxCPUPerConnUs    float64            `json:"auxCpuPerConnUs,omitempty"`
	AuxPerConnUsByName map[string]float64 `json:"auxCpuPerConnUsByName,omitempty"`
	ClientCPUPerConnUs float64            `json:"clientCpuPerConnUs,omitempty"`
}

// connectFleet connects f's clients to t and measures the phase.
func connectFleet(t Target, f *Fleet) (ConnectResult, error) {
	m, err := newMeasurer(t, f)
	if err != nil {
		return ConnectResult{}, err
	}
	start := time.Now()
	reps, err := f.Do(Command{Op: "connect"})
	if err != nil {
		return ConnectResult{}, err
	}
	r := ConnectResult{Seconds: time.Since(start).Seconds()}
	procs, aux, client := ReadProcsLenient(t.PIDs), ReadProcsLenient(m.auxPIDs), ReadProcsLenient(f.PIDs())
	var lat HistSnapshot
	for _, rep := range reps {
		c := rep.Connect
		r.Connections += c.Attempted
		r.Subscribed += c.Subscribed
		r.Failed += c.Failed
		if r.FirstError == "" {
			r.FirstError = c.FirstError
		}
		lat = lat.Merge(c.Latency)
	}
	r.Latency = lat.Summary()
	r.PerSec = float64(r.Subscribed) / r.Seconds
	if n := float64(r.Subscribed); n > 0 {
		r.ServerCPUPerConnUs = CPUDelta(m.procs, procs).Seconds() * 1e6 / n
		r.ClientCPUPerConnUs = CPUDelta(m.client, client).Seconds() * 1e6 / n
		r.AuxCPUPerConnUs = CPUDelta(m.aux, aux).Seconds() * 1e6 / n
		r.AuxPerConnUsByName = m.byNameSince(m.aux, aux, n)
	}
	return r, nil
}

// drain waits until every acknowledged publication has been delivered (or
// the timeout passes) and returns the final stats and what is missing.
func drain(f *Fleet, subscribers int, timeout time.Duration) (*Stats, int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := f.Snapshot(false)
		if err != nil {
			return nil, 0, err
		}
		missing := ExpectedDeliveries(s.PubsPerRoom, subscribers) - s.Delivered
		if missing <= 0 || time.Now().After(deadline) {
			return s, missing, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// IdleResult is the idle-connections scenario's outcome.
type IdleResult struct {
	Connect ConnectResult `json:"connect"`
	Rooms   int           `json:"rooms"`
	// Memory of the one node all clients connect to, before and after.
	RSSBefore       int64    `json:"rssBeforeBytes"`
	RSSAfter        int64    `json:"rssAfterBytes"`
	RSSPerConn      float64  `json:"rssPerConnBytes"`
	HeapBefore      GoMemory `json:"goBefore"`
	HeapAfter       GoMemory `json:"goAfter"`
	HeapPerConn     float64  `json:"heapInusePerConnBytes"`
	StackPerConn    float64  `json:"stackInusePerConnBytes"`
	GoroutinesPerCn float64  `json:"goroutinesPerConn"`
	// IdleCPUPct is the node's CPU use while the connections sit idle.
	IdleCPUPct float64 `json:"idleCpuPct"`
	// HeapProfile is the node's heap profile with the connections open.
	HeapProfile string `json:"heapProfile,omitempty"`
}

// Idle connects n clients (each subscribed to one of rooms channels) to the
// target's first node and measures that node's memory per connection.
func Idle(ctx context.Context, o Options, t Target, n, rooms int) (*IdleResult, error) {
	n = o.scaled(n)
	rooms = max(1, min(rooms, n))
	node := t.PIDs[:1]
	settle := o.window(5 * time.Second)
	time.Sleep(settle)
	before, err := ReadProcs(node)
	if err != nil {
		return nil, err
	}
	res := &IdleResult{Rooms: rooms, RSSBefore: before.RSS}
	if t.MetricsURLs[0] != "" {
		res.HeapBefore, _ = FetchGoMemory(ctx, t.MetricsURLs[0])
	}
	f, err := o.fleet(Layout{Endpoints: t.Endpoints[:1], ChannelPrefix: channelPrefix(o, "idle"), Rooms: rooms, Subscribers: n})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if res.Connect, err = connectFleet(t, f); err != nil {
		return nil, err
	}
	o.logf("%s idle: %d/%d subscribed in %.1fs (%.0f/s)", t.Name, res.Connect.Subscribed, n, res.Connect.Seconds, res.Connect.PerSec)
	time.Sleep(settle)
	mid, err := ReadProcs(node)
	if err != nil {
		return nil, err
	}
	cpuWindow := o.window(10 * time.Second)
	time.Sleep(cpuWindow)
	after, err := ReadProcs(node)
	if err != nil {
		return nil, err
	}
	res.IdleCPUPct = CPUDelta(mid, after).Seconds() / cpuWindow.Seconds() * 100
	if o.OutDir != "" && len(t.PprofURLs) > 0 && t.PprofURLs[0] != "" {
		p := filepath.Join(o.OutDir, "heap-"+t.Name+"-idle.pprof")
		if err := FetchHeapProfile(ctx, t.PprofURLs[0], p); err != nil {
			o.logf("%s: heap profile: %v", t.Name, err)
		} else {
			res.HeapProfile = p
		}
	}
	res.RSSAfter = after.RSS
	conns := float64(max(res.Connect.Subscribed, 1))
	res.RSSPerConn = float64(res.RSSAfter-res.RSSBefore) / conns
	if t.MetricsURLs[0] != "" {
		if res.HeapAfter, err = FetchGoMemory(ctx, t.MetricsURLs[0]); err == nil {
			res.HeapPerConn = (res.HeapAfter.HeapInuse - res.HeapBefore.HeapInuse) / conns
			res.StackPerConn = (res.HeapAfter.StackInuse - res.HeapBefore.StackInuse) / conns
			res.GoroutinesPerCn = (res.HeapAfter.Goroutines - res.HeapBefore.Goroutines) / conns
		}
	}
	o.logf("%s idle: rss %.1f KB/conn, heap %.1f KB/conn, idle cpu %.1f%%", t.Name, res.RSSPerConn/1024, res.HeapPerConn/1024, res.IdleCPUPct)
	return res, nil
}

func channelPrefix(o Options, scenario string) string {
	return Namespace + ":" + o.RunID + "-" + scenario + "-"
}

// FanoutResult is the one-big-room scenario's outcome.
type FanoutResult struct {
	Subscribers int           `json:"subscribers"`
	Connect     ConnectResult `json:"connect"`
	// Fixed is the window at the fixed rate every target gets (the headline
	// CPU-per-message and equal-load latency figures).
	Fixed Window   `json:"fixed"`
	Steps []Window `json:"steps"`
	// MaxSustained is the highest delivered msgs/s of a sustained step.
	MaxSustained     float64 `json:"maxSustainedMsgsPerSec"`
	MaxSustainedPubs float64 `json:"maxSustainedPubsPerSec"`
	// Half is the window at 50% of the maximum sustained publish rate.
	Half Window `json:"half"`
	// Profiles are CPU profiles taken at the maximum sustained rate, per node.
	Profiles []string `json:"profiles,omitempty"`
	Lost     int64    `json:"lost"`
	Gaps     int64    `json:"gaps"`
	Dups     int64    `json:"duplicates"`
	// Disconnects by code over the whole scenario, and recoveries.
	Disconnects   map[string]int64 `json:"disconnects,omitempty"`
	WasRecovering int64            `json:"wasRecovering"`
	Recovered     int64            `json:"recovered"`
}

// FanoutConfig shapes the fanout scenario.
type FanoutConfig struct {
	Subscribers int
	Publishers  int
	FixedRate   float64   // publications/s for the headline window
	Rates       []float64 // rising publication rates
	Warmup      time.Duration
	Window      time.Duration
	// MaxP50 marks a step as falling behind when its median latency exceeds
	// it: a growing backlog moves the median, while a noisy machine moves
	// mostly the tail.
	MaxP50 time.Duration
}

// sustained judges a step: delivery keeps up with the offered load.
func sustained(w Window, maxP50 time.Duration) (bool, string) {
	switch {
	case w.DeliveredPerSec < 0.95*w.OfferedMsgs:
		return false, fmt.Sprintf("delivered %.0f/s < 95%% of offered %.0f/s", w.DeliveredPerSec, w.OfferedMsgs)
	case w.Latency.P50Ms > float64(maxP50)/1e6:
		return false, fmt.Sprintf("p50 %.0fms > %v", w.Latency.P50Ms, maxP50)
	case w.Disconnects > 0:
		return false, fmt.Sprintf("%d disconnects", w.Disconnects)
	case w.PublishErrors > 0:
		return false, fmt.Sprintf("%d publish errors", w.PublishErrors)
	case w.PublishDrops > 0:
		return false, fmt.Sprintf("%d publishes not sent (all publish slots busy)", w.PublishDrops)
	}
	return true, ""
}

// Fanout runs one room with many subscribers at rising publish rates.
func Fanout(ctx context.Context, o Options, t Target, c FanoutConfig) (*FanoutResult, error) {
	subs := o.scaled(c.Subscribers)
	res := &FanoutResult{Subscribers: subs}
	f, err := o.fleet(Layout{Endpoints: t.Endpoints, ChannelPrefix: channelPrefix(o, "fanout"), Rooms: 1, Subscribers: subs,
		Publishers: c.Publishers, PublishConcurrency: 512})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if res.Connect, err = connectFleet(t, f); err != nil {
		return nil, err
	}
	if res.Connect.Failed > 0 {
		return nil, fmt.Errorf("%s fanout: %d connections failed: %s", t.Name, res.Connect.Failed, res.Connect.FirstError)
	}
	st, err := newStepper(ctx, o, t, f, subs, float64(subs), c.Warmup, c.Window, c.MaxP50)
	if err != nil {
		return nil, err
	}
	st.logStep = func(rate float64, w Window) {
		o.logf("%s fanout %5.0f pub/s: %8.0f msg/s delivered, p50 %6.2fms p99 %7.2fms, server cpu %.2fs (%.2f µs/msg) %s",
			t.Name, rate, w.DeliveredPerSec, w.Latency.P50Ms, w.Latency.P99Ms, w.ServerCPUSec, w.CPUPerMsgUs, w.Why)
	}
	if res.Fixed, err = st.run(c.FixedRate, ""); err != nil {
		return nil, err
	}
	st.pause()
	res.Steps, err = st.climb(c.Rates, func(float64) string { return "" }, func(rate float64, w Window) {
		if w.DeliveredPerSec > res.MaxSustained {
			res.MaxSustained, res.MaxSustainedPubs = w.DeliveredPerSec, rate
		}
	})
	if err != nil {
		return nil, err
	}
	st.pause()
	if res.MaxSustainedPubs > 0 {
		if res.Half, err = st.run(res.MaxSustainedPubs/2, ""); err != nil {
			return nil, err
		}
		if o.OutDir != "" {
			st.pause()
			if _, err := st.run(res.MaxSustainedPubs, filepath.Join(o.OutDir, "profile-"+t.Name+"-fanout")); err != nil {
				return nil, err
			}
		}
	}
	res.Profiles = st.profiles
	_ = f.SetRate(0, st.weights)
	s, missing, err := drain(f, subs, o.window(20*time.Second))
	if err != nil {
		return nil, err
	}
	res.Lost, res.Gaps, res.Dups = missing, s.Gaps, s.Duplicates
	res.Disconnects, res.WasRecovering, res.Recovered = s.Disconnects, s.WasRecovering, s.Recovered
	if res.Lost != 0 || res.Gaps != 0 || res.Dups != 0 {
		o.logf("%s fanout: lost %d, gaps %d, duplicates %d; disconnects %v; %d recoveries, %d recovered", t.Name, res.Lost, res.Gaps, res.Dups, res.Disconnects, res.WasRecovering, res.Recovered)
	}
	return res, nil
}

// ReconnectResult is the reconnect-storm scenario's outcome.
type ReconnectResult struct {
	Clients       int           `json:"clients"`
	Rooms         int           `json:"rooms"`
	Connect       ConnectResult `json:"connect"`
	Dropped       int           `json:"dropped"`
	AllBackSec    float64       `json:"allResubscribedSec"`
	Resubscribed  int64         `json:"resubscribed"`
	WasRecovering int64         `json:"wasRecovering"`
	Recovered     int64         `json:"recovered"`
	Published     int64         `json:"published"`
	Delivered     int64         `json:"delivered"`
	Lost          int64         `json:"lost"`
	Gaps          int64         `json:"gaps"`
	Dups          int64         `json:"duplicates"`
	StormCPUSec   float64       `json:"stormServerCpuSec"`
	PublishErrors int64         `json:"publishErrors"`
	FirstError    string        `json:"firstError,omitempty"`
	// Disconnects by code as the clients saw them (the drop itself shows as
	// transport-closed codes).
	Disconnects map[string]int64 `json:"disconnects,omitempty"`
}

// Reconnect connects clients (in rooms of 10), keeps publications flowing,
// cuts every client's TCP connection at once and measures how long until all
// are subscribed again and whether each recovered what it missed.
func Reconnect(ctx context.Context, o Options, t Target, clients int, rate float64) (*ReconnectResult, error) {
	clients = o.scaled(clients)
	rooms := max(1, clients/10)
	res := &ReconnectResult{Clients: clients, Rooms: rooms}
	f, err := o.fleet(Layout{Endpoints: t.Endpoints, ChannelPrefix: channelPrefix(o, "reconnect"), Rooms: rooms, Subscribers: clients,
		Publishers: 4, PublishConcurrency: 512})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if res.Connect, err = connectFleet(t, f); err != nil {
		return nil, err
	}
	if res.Connect.Failed > 0 {
		return nil, fmt.Errorf("%s reconnect: %d connections failed: %s", t.Name, res.Connect.Failed, res.Connect.FirstError)
	}
	weights := PublisherWeights(f.Jobs)
	if err := f.SetRate(rate, weights); err != nil {
		return nil, err
	}
	time.Sleep(o.window(3 * time.Second))
	before, err := ReadProcs(t.PIDs)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	reps, err := f.Do(Command{Op: "drop"})
	if err != nil {
		return nil, err
	}
	for _, r := range reps {
		res.Dropped += r.Dropped
	}
	deadline := start.Add(90 * time.Second)
	var s *Stats
	for {
		if s, err = f.Snapshot(false); err != nil {
			return nil, err
		}
		if s.Subscribed >= int64(clients) && s.WasRecovering >= int64(clients) {
			res.AllBackSec = time.Since(start).Seconds()
			break
		}
		if time.Now().After(deadline) {
			res.AllBackSec = -1
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, err := ReadProcs(t.PIDs)
	if err != nil {
		return nil, err
	}
	res.StormCPUSec = CPUDelta(before, after).Seconds()
	time.Sleep(o.window(3 * time.Second))
	_ = f.SetRate(0, weights)
	s, missing, err := drain(f, clients, o.window(20*time.Second))
	if err != nil {
		return nil, err
	}
	res.Resubscribed, res.WasRecovering, res.Recovered = s.Subscribed, s.WasRecovering, s.Recovered
	res.Published, res.Delivered, res.Lost, res.Gaps, res.Dups = s.Published, s.Delivered, missing, s.Gaps, s.Duplicates
	res.PublishErrors, res.FirstError, res.Disconnects = s.PublishErrors, s.FirstError, s.Disconnects
	o.logf("%s reconnect: %d dropped, all back in %.2fs, recovered %d/%d (%d recoveries), lost %d, gaps %d, dups %d, disconnects %v", t.Name, res.Dropped, res.AllBackSec, res.Recovered, clients, res.WasRecovering, res.Lost, res.Gaps, res.Dups, res.Disconnects)
	return res, t.alive()
}

// alive checks the target's processes still run.
func (t Target) alive() error {
	for _, pid := range t.PIDs {
		if _, err := ReadProc(pid); err != nil {
			return fmt.Errorf("%s: server process %d is gone: %w", t.Name, pid, err)
		}
	}
	return nil
}

// HeadlineResult compares two systems at one fixed load, alternating
// measured windows between them so that the machine's background load (other
// work, thermal state) hits both alike; medians are reported.
type HeadlineResult struct {
	Subscribers int     `json:"subscribers"`
	Rate        float64 `json:"ratePubsPerSec"`
	// Windows per system, in the order they ran (A B A B …).
	Windows map[string][]Window `json:"windows"`
	// Median per system: CPU µs/msg and latency percentiles are each the
	// median over that system's windows.
	Median map[string]Window `json:"median"`
}

// Headline runs subscribers in one room on each target (all connected at
// once), then rounds of one window per target at rate publications/s, only
// one target publishing at a time.
func Headline(ctx context.Context, o Options, targets []Target, subscribers, publishers int, rate float64, rounds int, warmup, window time.Duration) (*HeadlineResult, error) {
	subs := o.scaled(subscribers)
	res := &HeadlineResult{Subscribers: subs, Rate: rate, Windows: map[string][]Window{}, Median: map[string]Window{}}
	type side struct {
		t       Target
		f       *Fleet
		m       *measurer
		weights []int
	}
	var sides []*side
	defer func() {
		for _, s := range sides {
			s.f.Close()
		}
	}()
	for _, t := range targets {
		f, err := o.fleet(Layout{Endpoints: t.Endpoints, ChannelPrefix: channelPrefix(o, "headline-"+t.Name), Rooms: 1, Subscribers: subs,
			Publishers: publishers, PublishConcurrency: 512})
		if err != nil {
			return nil, err
		}
		sides = append(sides, &side{t: t, f: f, weights: PublisherWeights(f.Jobs)})
		c, err := connectFleet(t, f)
		if err != nil {
			return nil, err
		}
		if c.Failed > 0 {
			return nil, fmt.Errorf("%s headline: %d connections failed: %s", t.Name, c.Failed, c.FirstError)
		}
		if sides[len(sides)-1].m, err = newMeasurer(t, f); err != nil {
			return nil, err
		}
	}
	warm, win := o.window(warmup), o.window(window)
	for round := 0; round < rounds; round++ {
		for _, s := range sides {
			if err := s.f.SetRate(rate, s.weights); err != nil {
				return nil, err
			}
			time.Sleep(warm)
			if err := s.m.mark(); err != nil {
				return nil, err
			}
			time.Sleep(win)
			w, err := s.m.window(rate, float64(subs))
			if err != nil {
				return nil, err
			}
			w.Sustained, w.Why = sustained(w, time.Second)
			if err := s.f.SetRate(0, s.weights); err != nil {
				return nil, err
			}
			res.Windows[s.t.Name] = append(res.Windows[s.t.Name], w)
			o.logf("%s headline round %d: %.0f msg/s, p50 %.2fms p99 %.2fms, server %.2f µs/msg, client cpu %.2fs %s",
				s.t.Name, round+1, w.DeliveredPerSec, w.Latency.P50Ms, w.Latency.P99Ms, w.CPUPerMsgUs, w.ClientCPUSec, w.Why)
			if _, _, err := drain(s.f, subs, o.window(10*time.Second)); err != nil {
				return nil, err
			}
			if err := s.t.alive(); err != nil {
				return nil, err
			}
		}
	}
	for name, ws := range res.Windows {
		res.Median[name] = MedianWindow(ws)
	}
	return res, nil
}

// MedianWindow takes the median of each figure over windows separately.
func MedianWindow(ws []Window) Window {
	if len(ws) == 0 {
		return Window{}
	}
	med := func(f func(Window) float64) float64 {
		v := make([]float64, len(ws))
		for i, w := range ws {
			v[i] = f(w)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	m := ws[0]
	m.DeliveredPerSec = med(func(w Window) float64 { return w.DeliveredPerSec })
	m.CPUPerMsgUs = med(func(w Window) float64 { return w.CPUPerMsgUs })
	m.SysPerMsgUs = med(func(w Window) float64 { return w.SysPerMsgUs })
	m.AuxPerMsgUs = med(func(w Window) float64 { return w.AuxPerMsgUs })
	m.ServerCPUSec = med(func(w Window) float64 { return w.ServerCPUSec })
	m.ClientCPUSec = med(func(w Window) float64 { return w.ClientCPUSec })
	m.Latency.P50Ms = med(func(w Window) float64 { return w.Latency.P50Ms })
	m.Latency.P99Ms = med(func(w Window) float64 { return w.Latency.P99Ms })
	m.Latency.P999Ms = med(func(w Window) float64 { return w.Latency.P999Ms })
	m.Latency.MeanMs = med(func(w Window) float64 { return w.Latency.MeanMs })
	m.Latency.MaxMs = med(func(w Window) float64 { return w.Latency.MaxMs })
	m.Sustained = true
	for _, w := range ws {
		m.Sustained = m.Sustained && w.Sustained
	}
	return m
}
