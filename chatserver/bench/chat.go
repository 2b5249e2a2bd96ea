package bench

// The many-small-rooms scenario: what a chat service mostly is. Rooms of ten
// users, every user subscribed to their room and publishing into it, at
// rising publication rates until a rate is not sustained (twice).

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// ChatConfig shapes the many-rooms scenario.
type ChatConfig struct {
	Rooms, UsersPerRoom int
	// Rates are the publication rates (in all, per second) of the steps, in
	// the order tried; the run stops at the first one not sustained twice.
	Rates []float64
	// Reference is the rate whose step the summary compares (the 1000).
	Reference float64
	Warmup    time.Duration
	Window    time.Duration
}

// ChatResult is the many-small-rooms scenario's outcome.
type ChatResult struct {
	Rooms       int           `json:"rooms"`
	Subscribers int           `json:"subscribers"`
	Connect     ConnectResult `json:"connect"`
	// Window is the step at the reference rate (or the last sustained one
	// below it), Steps every step in order.
	Window Window   `json:"window"`
	Steps  []Window `json:"steps,omitempty"`
	// MaxSustainedPubs is the highest publication rate a step sustained.
	MaxSustainedPubs float64 `json:"maxSustainedPubsPerSec"`
	// Profiles are CPU profiles of each node over the reference step.
	Profiles []string `json:"profiles,omitempty"`
	Lost     int64    `json:"lost"`
	Gaps     int64    `json:"gaps"`
	Dups     int64    `json:"duplicates"`
}

// Step returns the first step at rate (nil if none ran).
func (r *ChatResult) Step(rate float64) *Window {
	for i := range r.Steps {
		if r.Steps[i].OfferedPubs == rate {
			return &r.Steps[i]
		}
	}
	return nil
}

// Chat runs c.Rooms rooms of c.UsersPerRoom users at each rate of c.Rates.
func Chat(ctx context.Context, o Options, t Target, c ChatConfig) (*ChatResult, error) {
	rooms := o.scaled(c.Rooms)
	subs := rooms * c.UsersPerRoom
	res := &ChatResult{Rooms: rooms, Subscribers: subs}
	f, err := o.fleet(Layout{Endpoints: t.Endpoints, ChannelPrefix: channelPrefix(o, "chat"), Rooms: rooms, Subscribers: subs,
		PublishFromSubscribers: true, PublishConcurrency: 512})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if res.Connect, err = connectFleet(t, f); err != nil {
		return nil, err
	}
	if res.Connect.Failed > 0 {
		return nil, fmt.Errorf("%s chat: %d connections failed: %s", t.Name, res.Connect.Failed, res.Connect.FirstError)
	}
	o.logf("%s chat: %d users in %d rooms subscribed in %.1fs (%.0f/s); CPU µs per connection: server %.0f, backing %.0f %v, clients %.0f", t.Name, subs, rooms,
		res.Connect.Seconds, res.Connect.PerSec, res.Connect.ServerCPUPerConnUs, res.Connect.AuxCPUPerConnUs, res.Connect.AuxPerConnUsByName, res.Connect.ClientCPUPerConnUs)
	st, err := newStepper(ctx, o, t, f, subs, float64(c.UsersPerRoom), c.Warmup, c.Window, time.Second)
	if err != nil {
		return nil, err
	}
	st.logStep = func(rate float64, w Window) {
		o.logf("%s chat %5.0f pub/s: %7.0f msg/s delivered, p50 %6.2fms p99 %7.2fms, publish p99 %7.2fms, server %.2f µs/msg, backing %.2f µs/pub %v, stages %s %s",
			t.Name, rate, w.DeliveredPerSec, w.Latency.P50Ms, w.Latency.P99Ms, w.PublishRTT.P99Ms, w.CPUPerMsgUs, w.AuxPerPubUs, w.AuxPerPubUsByName, stagesCell(w.Stages), w.Why)
	}
	reference := c.Reference * o.scale()
	rates := make([]float64, len(c.Rates))
	for i, r := range c.Rates {
		rates[i] = r * o.scale()
	}
	profileAt := func(rate float64) string {
		if o.OutDir == "" || rate != reference {
			return ""
		}
		return filepath.Join(o.OutDir, "profile-"+t.Name+"-chat")
	}
	res.Steps, err = st.climb(rates, profileAt, func(rate float64, w Window) {
		if rate <= reference {
			res.Window = w
		}
		res.MaxSustainedPubs = max(res.MaxSustainedPubs, rate)
	})
	res.Profiles = st.profiles
	if err != nil {
		return nil, err
	}
	_ = f.SetRate(0, st.weights)
	s, missing, err := drain(f, subs, o.window(20*time.Second))
	if err != nil {
		return nil, err
	}
	res.Lost, res.Gaps, res.Dups = missing, s.Gaps, s.Duplicates
	o.logf("%s chat: max sustained %.0f pub/s; lost %d, gaps %d, duplicates %d", t.Name, res.MaxSustainedPubs, res.Lost, res.Gaps, res.Dups)
	return res, t.alive()
}
