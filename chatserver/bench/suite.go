package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The systems the suite compares, in the order each scenario runs them
// (interleaved: every scenario runs against all before the next scenario).
var AllTargets = []string{"parley-2r", "centrifugo-2n", "parley-1", "centrifugo-1"}

// BaseTarget is Parley with 2 replicas built from a baseline revision
// (Env.ParleyBaseBin): run beside parley-2r it gives before/after figures
// measured in the same run.
const BaseTarget = "parley-2r-base"

// DurableCentrifugoTarget is Centrifugo with 2 nodes on a Redis that fsyncs
// its append-only file before every reply: history as durable as Parley's,
// which commits to PostgreSQL before it acknowledges. The machine's Redis
// (centrifugo-2n) keeps nothing on disk. Not in AllTargets: name it in
// -targets.
const DurableCentrifugoTarget = "centrifugo-2n-aof"

// AllScenarios in the order the suite runs them.
var AllScenarios = []string{"headline", "fanout", "chat", "idle", "reconnect"}

// SuiteConfig is one `chatbench suite` invocation.
type SuiteConfig struct {
	Env       Env
	Options   Options
	Targets   []string
	Scenarios []string

	IdleConns, IdleRooms int
	Fanout               FanoutConfig
	// HeadlineRounds alternate windows per pair at Fanout.FixedRate.
	HeadlineRounds   int
	Chat             ChatConfig
	ReconnectClients int
	ReconnectRate    float64

	// Command is the command line that produced the run, for the report.
	Command string
	// Revision is the source revision of the servers under test (git describe).
	Revision string
}

// DefaultSuite is the scenarios at full size.
func DefaultSuite() SuiteConfig {
	return SuiteConfig{
		Targets: AllTargets, Scenarios: AllScenarios,
		IdleConns: 15000, IdleRooms: 1000, HeadlineRounds: 3,
		Fanout: FanoutConfig{
			Subscribers: 2000, Publishers: 8, FixedRate: 10,
			Rates:  []float64{5, 10, 15, 20, 30, 40, 60, 80, 120},
			Warmup: 2 * time.Second, Window: 6 * time.Second, MaxP50: 500 * time.Millisecond,
		},
		Chat: ChatConfig{
			Rooms: 1000, UsersPerRoom: 10, Reference: 1000,
			Rates:  []float64{500, 1000, 1500, 2000, 3000, 4000},
			Warmup: 3 * time.Second, Window: 10 * time.Second,
		},
		ReconnectClients: 5000, ReconnectRate: 200,
	}
}

// TargetInfo describes a compared system.
type TargetInfo struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Backend string `json:"backend"`
	Nodes   int    `json:"nodes"`
	Version string `json:"version"`
}

// SuiteResult is everything one run measured.
type SuiteResult struct {
	RunID     string                      `json:"runId"`
	Started   time.Time                   `json:"started"`
	Finished  time.Time                   `json:"finished"`
	Command   string                      `json:"command"`
	Revision  string                      `json:"revision,omitempty"`
	Machine   Machine                     `json:"machine"`
	Payload   int                         `json:"payloadBytes"`
	Targets   []TargetInfo                `json:"targets"`
	Idle      map[string]*IdleResult      `json:"idle,omitempty"`
	Fanout    map[string]*FanoutResult    `json:"fanout,omitempty"`
	Chat      map[string]*ChatResult      `json:"chat,omitempty"`
	Reconnect map[string]*ReconnectResult `json:"reconnect,omitempty"`
	// Headline is keyed by the Parley system of each compared pair.
	Headline map[string]*HeadlineResult `json:"headline,omitempty"`
	Errors   map[string]string          `json:"errors,omitempty"`
	Config   SuiteConfigSummary         `json:"config"`
}

// SuiteConfigSummary records the sizes a run used.
type SuiteConfigSummary struct {
	IdleConns        int       `json:"idleConns"`
	IdleRooms        int       `json:"idleRooms"`
	FanoutSubs       int       `json:"fanoutSubscribers"`
	FanoutPublishers int       `json:"fanoutPublishers"`
	FixedRate        float64   `json:"fixedRatePubsPerSec"`
	Rates            []float64 `json:"ratesPubsPerSec"`
	StepSeconds      float64   `json:"stepWindowSec"`
	ChatRooms        int       `json:"chatRooms"`
	ChatUsers        int       `json:"chatUsersPerRoom"`
	ChatRate         float64   `json:"chatRatePubsPerSec"`
	ChatRates        []float64 `json:"chatRatesPubsPerSec,omitempty"`
	ChatStepSeconds  float64   `json:"chatStepWindowSec,omitempty"`
	ReconnectClients int       `json:"reconnectClients"`
	ReconnectRate    float64   `json:"reconnectRatePubsPerSec"`
	Scale            float64   `json:"scale"`
}

// Machine facts for the report.
type Machine struct {
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	MemoryGiB  float64 `json:"memoryGiB"`
	Kernel     string  `json:"kernel"`
	GoVersion  string  `json:"goVersion"`
	FileLimit  uint64  `json:"fileLimit"`
	LoadBefore string  `json:"loadAvgBefore"`
	LoadAfter  string  `json:"loadAvgAfter"`
}

// ReadMachine collects machine facts from /proc.
func ReadMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					m.MemoryGiB = kb / (1 << 20)
				}
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	m.LoadBefore = loadAvg()
	return m
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func (c SuiteConfig) start(ctx context.Context, name string) (*Server, error) {
	switch name {
	case "parley-2r", BaseTarget:
		return c.Env.StartParley(ctx, name, 2, true)
	case "parley-1":
		return c.Env.StartParley(ctx, name, 1, false)
	case "centrifugo-2n":
		return c.Env.StartCentrifugo(ctx, name, 2, SharedRedis)
	case DurableCentrifugoTarget:
		return c.Env.StartCentrifugo(ctx, name, 2, DurableRedis)
	case "centrifugo-1":
		return c.Env.StartCentrifugo(ctx, name, 1, NoRedis)
	}
	return nil, fmt.Errorf("unknown target %q (want one of %s, %s, %s)", name, strings.Join(AllTargets, ", "), BaseTarget, DurableCentrifugoTarget)
}

// RunSuite runs every scenario against every target, a fresh server per
// (scenario, target), and collects the results; a failing pair is recorded
// and the run goes on.
func RunSuite(ctx context.Context, c SuiteConfig) *SuiteResult {
	o := c.Options
	res := &SuiteResult{
		RunID: c.Env.RunID, Started: time.Now(), Command: c.Command, Revision: c.Revision, Machine: ReadMachine(), Payload: o.PayloadBytes,
		Idle: map[string]*IdleResult{}, Fanout: map[string]*FanoutResult{}, Chat: map[string]*ChatResult{},
		Reconnect: map[string]*ReconnectResult{}, Headline: map[string]*HeadlineResult{}, Errors: map[string]string{},
		Config: SuiteConfigSummary{
			IdleConns: o.scaled(c.IdleConns), IdleRooms: c.IdleRooms, FanoutSubs: o.scaled(c.Fanout.Subscribers),
			FanoutPublishers: c.Fanout.Publishers, FixedRate: c.Fanout.FixedRate, Rates: c.Fanout.Rates,
			StepSeconds: o.window(c.Fanout.Window).Seconds(), ChatRooms: o.scaled(c.Chat.Rooms), ChatUsers: c.Chat.UsersPerRoom,
			ChatRate: c.Chat.Reference * o.scale(), ChatRates: c.Chat.Rates, ChatStepSeconds: o.window(c.Chat.Window).Seconds(), ReconnectClients: o.scaled(c.ReconnectClients), ReconnectRate: c.ReconnectRate, Scale: o.scale(),
		},
	}
	res.Machine.FileLimit, _ = RaiseFileLimit()
	for _, name := range c.Targets {
		info := TargetInfo{Name: name}
		switch {
		case strings.HasPrefix(name, "parley"):
			info.Kind, info.Version = "parley", binaryVersion(c.Env.ParleyBin)
			if name == BaseTarget {
				info.Version = binaryVersion(c.Env.ParleyBaseBin)
			}
		default:
			info.Kind, info.Version = "centrifugo", binaryVersion(c.Env.CentrifugoBin, "version")
		}
		info.Nodes, info.Backend = 1, "memory"
		if strings.HasSuffix(name, "-2r") || strings.HasSuffix(name, "-2n") || name == BaseTarget {
			info.Nodes = 2
			info.Backend = map[string]string{"parley": "RabbitMQ + PostgreSQL", "centrifugo": backendRedis}[info.Kind]
		}
		if name == DurableCentrifugoTarget {
			info.Nodes, info.Backend = 2, backendDurableRedis
		}
		res.Targets = append(res.Targets, info)
	}
	for _, sc := range c.Scenarios {
		if sc == "headline" {
			c.headline(ctx, res)
			continue
		}
		for _, name := range c.Targets {
			if ctx.Err() != nil {
				res.Errors["suite"] = ctx.Err().Error()
				res.Finished = time.Now()
				return res
			}
			key := sc + "/" + name
			o.logf("== %s", key)
			srv, err := c.start(ctx, name)
			if err != nil {
				res.Errors[key] = err.Error()
				o.logf("%s: %v", key, err)
				continue
			}
			t := TargetOf(srv)
			switch sc {
			case "idle":
				var r *IdleResult
				if r, err = Idle(ctx, o, t, c.IdleConns, c.IdleRooms); err == nil {
					res.Idle[name] = r
				}
			case "fanout":
				var r *FanoutResult
				if r, err = Fanout(ctx, o, t, c.Fanout); err == nil {
					res.Fanout[name] = r
				}
			case "chat":
				var r *ChatResult
				if r, err = Chat(ctx, o, t, c.Chat); err == nil {
					res.Chat[name] = r
				}
			case "reconnect":
				var r *ReconnectResult
				if r, err = Reconnect(ctx, o, t, c.ReconnectClients, c.ReconnectRate); err == nil {
					res.Reconnect[name] = r
				}
			default:
				err = fmt.Errorf("unknown scenario %q (want one of %s)", sc, strings.Join(AllScenarios, ", "))
			}
			if aerr := srv.Alive(); err == nil && aerr != nil {
				err = aerr
			}
			srv.Stop()
			if err != nil {
				res.Errors[key] = err.Error()
				o.logf("%s: %v", key, err)
			}
		}
	}
	res.Finished = time.Now()
	res.Machine.LoadAfter = loadAvg()
	return res
}

// headline runs the alternating fixed-rate comparison for every pair whose
// two systems are both among the targets.
func (c SuiteConfig) headline(ctx context.Context, res *SuiteResult) {
	o := c.Options
	for _, pair := range Pairs {
		if !slices.Contains(c.Targets, pair[0]) || !slices.Contains(c.Targets, pair[1]) {
			continue
		}
		key := "headline/" + pair[0] + "+" + pair[1]
		o.logf("== %s", key)
		var servers []*Server
		var targets []Target
		var err error
		for _, name := range pair {
			var srv *Server
			if srv, err = c.start(ctx, name); err != nil {
				break
			}
			servers = append(servers, srv)
			targets = append(targets, TargetOf(srv))
		}
		if err == nil {
			var r *HeadlineResult
			if r, err = Headline(ctx, o, targets, c.Fanout.Subscribers, c.Fanout.Publishers, c.Fanout.FixedRate, max(1, c.HeadlineRounds),
				c.Fanout.Warmup, c.Fanout.Window+2*time.Second); err == nil {
				res.Headline[pair[0]] = r
			}
		}
		for _, srv := range servers {
			if aerr := srv.Alive(); err == nil && aerr != nil {
				err = aerr
			}
			srv.Stop()
		}
		if err != nil {
			res.Errors[key] = err.Error()
			o.logf("%s: %v", key, err)
		}
	}
}

func binaryVersion(bin string, args ...string) string {
	if bin == "" {
		return ""
	}
	if len(args) == 0 {
		return filepath.Base(bin)
	}
	out, err := execOutput(bin, args...)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// WriteJSON writes the results.
func (r *SuiteResult) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// ProfileTops summarises every Parley CPU profile of a run with `go tool
// pprof -top` (keyed by profile file name); the binary gives the symbols.
func (r *SuiteResult) ProfileTops(parleyBin string, nodeCount int) map[string]string {
	out := map[string]string{}
	top := func(p string, extra ...string) {
		if _, err := os.Stat(p); err != nil {
			return
		}
		args := append([]string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(nodeCount)}, extra...)
		text, err := execOutput("go", append(args, parleyBin, p)...)
		if err != nil {
			text = "go tool pprof failed: " + err.Error()
		}
		out[filepath.Base(p)] = text
	}
	for _, t := range r.Targets {
		if t.Kind != "parley" {
			continue
		}
		if f := r.Fanout[t.Name]; f != nil {
			for _, p := range f.Profiles {
				top(p)
			}
		}
		if c := r.Chat[t.Name]; c != nil {
			for _, p := range c.Profiles {
				top(p)
			}
		}
		if i := r.Idle[t.Name]; i != nil && i.HeapProfile != "" {
			top(i.HeapProfile, "-sample_index=inuse_space")
		}
	}
	return out
}
