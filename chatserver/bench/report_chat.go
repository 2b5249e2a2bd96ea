package bench

// The many-rooms section of the report: the ratios against
// Centrifugo at 500 and 1000 publications/s and at the highest rate both
// sustain, the same figures against a baseline build of Parley when the run
// had one, and every step.

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// chatRow is one compared figure of a many-rooms step.
type chatRow struct {
	label string
	unit  string
	goal  float64 // Parley/Centrifugo target; 0: none
	lower bool
	get   func(w *Window) float64
}

var chatRows = []chatRow{
	{"delivery p50", "ms", 1.0, true, func(w *Window) float64 { return w.Latency.P50Ms }},
	{"delivery p99", "ms", 1.0, true, func(w *Window) float64 { return w.Latency.P99Ms }},
	{"publish round trip p99", "ms", 1.0, true, func(w *Window) float64 { return w.PublishRTT.P99Ms }},
	{"server CPU per delivered message", "µs", 0.8, true, func(w *Window) float64 { return w.CPUPerMsgUs }},
	{"backing services' CPU per publication", "µs", 2.0, true, func(w *Window) float64 { return w.AuxPerPubUs }},
}

// chatRates are the rates a pair is compared at: 500 and the reference rate
// when both ran them, and the highest rate both sustained.
func chatRates(a, b *ChatResult, reference float64) []float64 {
	var rates []float64
	for _, r := range []float64{reference / 2, reference} {
		if a.Step(r) != nil && b.Step(r) != nil {
			rates = append(rates, r)
		}
	}
	both := math.Min(a.MaxSustainedPubs, b.MaxSustainedPubs)
	if both > 0 && !containsFloat(rates, both) {
		rates = append(rates, both)
	}
	return rates
}

func containsFloat(xs []float64, x float64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// chatPairTable renders a's figures over b's at each compared rate; with
// goals, each cell is judged against the target.
func (r *SuiteResult) chatPairTable(a, b string, goals bool) string {
	ca, cb := r.Chat[a], r.Chat[b]
	if ca == nil || cb == nil {
		return ""
	}
	var s strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&s, format, args...) }
	rates := chatRates(ca, cb, r.Config.ChatRate)
	p("| metric (goal) |")
	for i, rate := range rates {
		label := fmt.Sprintf(" at %.0f pub/s |", rate)
		if i == len(rates)-1 && rate == math.Min(ca.MaxSustainedPubs, cb.MaxSustainedPubs) {
			label = fmt.Sprintf(" at %.0f pub/s, the highest both sustain |", rate)
		}
		p("%s", label)
	}
	p("\n|---|%s\n", strings.Repeat("---|", len(rates)))
	for _, row := range chatRows {
		goal := 0.0
		name := row.label
		if goals {
			goal = row.goal
			name = fmt.Sprintf("%s (≤ %.1f×)", row.label, row.goal)
		}
		p("| %s |", name)
		for _, rate := range rates {
			p(" %s |", ratio(row.get(ca.Step(rate)), row.get(cb.Step(rate)), goal, row.lower).cell(row.unit, 2))
		}
		p("\n")
	}
	maxGoal, connGoal := 0.0, 0.0
	maxName, connName := "max sustained publications/s", "connections accepted per second (JWT, per-user limit on)"
	if goals {
		maxGoal, connGoal = 1.25, 1.0
		maxName += " (≥ 1.25×)"
		connName += " (≥ 1.0×)"
	}
	p("| %s | %s |%s\n", maxName, ratio(ca.MaxSustainedPubs, cb.MaxSustainedPubs, maxGoal, false).cell("pub/s", 0), strings.Repeat(" |", len(rates)-1))
	p("| %s | %s |%s\n", connName, ratio(ca.Connect.PerSec, cb.Connect.PerSec, connGoal, false).cell("conn/s", 0), strings.Repeat(" |", len(rates)-1))
	p("| lost / gaps / duplicates | %d / %d / %d and %d / %d / %d |%s\n", ca.Lost, ca.Gaps, ca.Dups, cb.Lost, cb.Gaps, cb.Dups, strings.Repeat(" |", len(rates)-1))
	return s.String()
}

// chatMarkdown renders the many-rooms section.
func (r *SuiteResult) chatMarkdown() string {
	if len(r.Chat) == 0 {
		return ""
	}
	var s strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&s, format, args...) }
	p("\n## Many small rooms: %d rooms of %d users chatting\n\n", r.Config.ChatRooms, r.Config.ChatUsers)
	p("Every user (a JWT-authenticated connection, with the per-user connection limit on as deployed) subscribes to their room and publishes into it, from random users at rising rates in all (%s pub/s, %.0f s measured per step after a warm-up); a rate counts as sustained when delivery keeps ≥ 95%% of the offered messages with the median under 1 s, no disconnects and no publish errors, and the run stops at the first rate not sustained twice. ", joinRates(r.Config.ChatRates), r.Config.ChatStepSeconds)
	p("Backing services' CPU is RabbitMQ's and PostgreSQL's (Parley) or Redis's (Centrifugo) per publication; other work on the machine adds to it.\n\n")
	if t := r.chatPairTable("parley-2r", "centrifugo-2n", true); t != "" {
		p("### Parley, 2 replicas (RabbitMQ + PostgreSQL) / Centrifugo, 2 nodes (Redis)\n\n%s\n", t)
	}
	if t := r.chatPairTable("parley-2r", DurableCentrifugoTarget, true); t != "" {
		p("### Parley, 2 replicas / Centrifugo, 2 nodes on a Redis that fsyncs every write (appendfsync always)\n\nBoth acknowledge a publication only once it is on disk; the machine's Redis (above) keeps nothing on disk.\n\n%s\n", t)
	}
	if t := r.chatPairTable(BaseTarget, "centrifugo-2n", true); t != "" {
		p("### Before: the baseline build of Parley / Centrifugo, 2 nodes\n\n%s\n", t)
	}
	if t := r.chatPairTable("parley-2r", BaseTarget, false); t != "" {
		p("### After / before: Parley / its baseline build, both 2 replicas, same run\n\n%s\n", t)
	}
	if t := r.chatPairTable("parley-1", "centrifugo-1", false); t != "" {
		p("### One node, in memory: Parley / Centrifugo\n\n%s\n", t)
	}
	p("### Every step\n\n")
	p("| system | offered pub/s | delivered msg/s | p50 / p99 / p99.9 ms | publish RTT p50 / p99 ms | server CPU µs/msg | backing CPU µs/pub | of which, by process | server stages p50 / p99 ms | sustained |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range r.Targets {
		c := r.Chat[t.Name]
		if c == nil {
			continue
		}
		for _, w := range c.Steps {
			p("| %s | %.0f | %.0f | %s | %.2f / %.2f | %.2f | %.2f | %s | %s | %s |\n", t.Name, w.OfferedPubs, w.DeliveredPerSec, lat3(w.Latency),
				w.PublishRTT.P50Ms, w.PublishRTT.P99Ms, w.CPUPerMsgUs, w.AuxPerPubUs, byProcess(w.AuxPerPubUsByName), stagesCell(w.Stages), w.verdict())
		}
	}
	p("\n| system | connect/s | connect p99 ms | CPU µs/connection: server / backing / clients | backing by process | max sustained pub/s | lost / gaps / dups |\n|---|---|---|---|---|---|---|\n")
	for _, t := range r.Targets {
		if c := r.Chat[t.Name]; c != nil {
			cn := c.Connect
			p("| %s | %.0f | %.1f | %.0f / %.0f / %.0f | %s | %.0f | %d / %d / %d |\n", t.Name, cn.PerSec, cn.Latency.P99Ms,
				cn.ServerCPUPerConnUs, cn.AuxCPUPerConnUs, cn.ClientCPUPerConnUs, byProcess(cn.AuxPerConnUsByName), c.MaxSustainedPubs, c.Lost, c.Gaps, c.Dups)
		}
	}
	return s.String()
}

func joinRates(rs []float64) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%.0f", r))
	}
	return strings.Join(parts, ", ")
}

// byProcess names the services: beam.smp is RabbitMQ.
func byProcess(m map[string]float64) string {
	if len(m) == 0 {
		return "–"
	}
	names := map[string]string{"beam.smp": "RabbitMQ", "postgres": "PostgreSQL", "redis-server": "Redis"}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		n := names[k]
		if n == "" {
			n = k
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", n, m[k]))
	}
	return strings.Join(parts, ", ")
}
