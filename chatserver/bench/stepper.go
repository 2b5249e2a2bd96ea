package bench

// The loop the rate-climbing scenarios share: set a publication rate, warm
// up, measure one window (optionally with a CPU profile of every node),
// judge it, and climb to the next rate until one is not sustained twice.

import (
	"context"
	"fmt"
	"time"
)

// stepper runs one fleet at one rate after another.
type stepper struct {
	ctx     context.Context
	o       Options
	t       Target
	f       *Fleet
	m       *measurer
	weights []int
	// subs is the fleet's subscriber count (what a pause drains);
	// perPub the deliveries one publication makes.
	subs   int
	perPub float64
	// warm and win are the scaled warm-up and measuring windows.
	warm, win time.Duration
	// maxP50 is the median delivery latency a sustained step stays under.
	maxP50 time.Duration
	// logStep prints one measured step.
	logStep func(rate float64, w Window)
	// profiles collects the CPU profile files written.
	profiles []string
}

func newStepper(ctx context.Context, o Options, t Target, f *Fleet, subs int, perPub float64, warmup, window, maxP50 time.Duration) (*stepper, error) {
	m, err := newMeasurer(t, f)
	if err != nil {
		return nil, err
	}
	return &stepper{ctx: ctx, o: o, t: t, f: f, m: m, weights: PublisherWeights(f.Jobs), subs: subs, perPub: perPub,
		warm: o.window(warmup), win: o.window(window), maxP50: maxP50, logStep: func(float64, Window) {}}, nil
}

// run measures one window at rate. With profile set, each node's CPU profile
// over the window is written to profile-node<i>.pprof.
func (s *stepper) run(rate float64, profile string) (Window, error) {
	if err := s.f.SetRate(rate, s.weights); err != nil {
		return Window{}, err
	}
	time.Sleep(s.warm)
	if err := s.m.mark(); err != nil {
		return Window{}, err
	}
	var profErr chan error
	if profile != "" && s.win >= time.Second {
		profErr = make(chan error, len(s.t.PprofURLs))
		for i, u := range s.t.PprofURLs {
			p := fmt.Sprintf("%s-node%d.pprof", profile, i)
			s.profiles = append(s.profiles, p)
			go func() { profErr <- FetchProfile(s.ctx, u, int(s.win.Seconds()), p) }()
		}
	}
	time.Sleep(s.win)
	w, err := s.m.window(rate, s.perPub)
	if err != nil {
		return Window{}, err
	}
	for range cap(profErr) {
		if err := <-profErr; err != nil {
			s.o.logf("%s: profile: %v", s.t.Name, err)
		}
	}
	w.Sustained, w.Why = sustained(w, s.maxP50)
	s.logStep(rate, w)
	return w, s.t.alive()
}

// pause stops publishing and lets what is in flight arrive, so the next step
// starts from an empty pipeline.
func (s *stepper) pause() {
	_ = s.f.SetRate(0, s.weights)
	_, _, _ = drain(s.f, s.subs, s.o.window(10*time.Second))
}

// climb runs the rates in order; a step not sustained is tried once more
// (on a shared machine a single window can be unlucky) and the climb stops
// at the first rate not sustained twice. Every window measured is returned;
// sustainedAt is called for each rate that held. profileAt names the profile
// for a rate ("" for none).
func (s *stepper) climb(rates []float64, profileAt func(rate float64) string, sustainedAt func(rate float64, w Window)) ([]Window, error) {
	var steps []Window
	for _, rate := range rates {
		w, err := s.run(rate, profileAt(rate))
		if err != nil {
			return steps, err
		}
		steps = append(steps, w)
		if !w.Sustained {
			s.pause()
			if w, err = s.run(rate, ""); err != nil {
				return steps, err
			}
			w.Retry = true
			steps = append(steps, w)
			if !w.Sustained {
				break
			}
		}
		sustainedAt(rate, w)
	}
	return steps, nil
}

// verdict is a step's "sustained" cell in the reports.
func (w Window) verdict() string {
	s := "yes"
	if !w.Sustained {
		s = "no: " + w.Why
	}
	if w.Retry {
		s += " (second try)"
	}
	return s
}
