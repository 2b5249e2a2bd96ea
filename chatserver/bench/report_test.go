package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRatioMeetsGoalInItsDirection(t *testing.T) {
	for _, c := range []struct {
		r    Ratio
		want bool
	}{
		{ratio(8, 10, 0.8, true), true},
		{ratio(9, 10, 0.8, true), false},
		{ratio(125, 100, 1.25, false), true},
		{ratio(120, 100, 1.25, false), false},
		{ratio(0, 100, 1.25, false), false},
	} {
		if got := c.r.Met(); got != c.want {
			t.Errorf("%+v: met %v, want %v", c.r, got, c.want)
		}
	}
	if !math.IsNaN(ratio(1, 0, 1, true).Ratio) {
		t.Error("a missing value gives a ratio")
	}
}

func TestSustainedNamesWhyAStepFellBehind(t *testing.T) {
	ok := Window{OfferedMsgs: 1000, DeliveredPerSec: 990, Latency: Summary{P99Ms: 20}}
	if s, why := sustained(ok, time.Second); !s || why != "" {
		t.Fatalf("keeping up judged %v %q", s, why)
	}
	for name, w := range map[string]Window{
		"95%":        {OfferedMsgs: 1000, DeliveredPerSec: 900},
		"p50":        {OfferedMsgs: 1000, DeliveredPerSec: 1000, Latency: Summary{P50Ms: 1500}},
		"disconnect": {OfferedMsgs: 1000, DeliveredPerSec: 1000, Disconnects: 3},
		"publish":    {OfferedMsgs: 1000, DeliveredPerSec: 1000, PublishErrors: 1},
		"slots":      {OfferedMsgs: 1000, DeliveredPerSec: 1000, PublishDrops: 1},
	} {
		if s, why := sustained(w, time.Second); s || !strings.Contains(why, name) {
			t.Errorf("%s: sustained=%v why=%q", name, s, why)
		}
	}
}

func sampleResult() *SuiteResult {
	step := func(pubs, msgs, p99 float64) Window {
		return Window{OfferedPubs: pubs, OfferedMsgs: msgs, DeliveredPerSec: msgs, Latency: Summary{Count: 10, P50Ms: p99 / 3, P99Ms: p99}, CPUPerMsgUs: 5, Sustained: true}
	}
	r := &SuiteResult{RunID: "test", Started: time.Now(), Finished: time.Now(), Payload: 100,
		Targets: []TargetInfo{{Name: "parley-1", Kind: "parley"}, {Name: "centrifugo-1", Kind: "centrifugo"}},
		Fanout: map[string]*FanoutResult{
			"parley-1":     {Fixed: step(25, 50000, 4), Steps: []Window{step(10, 20000, 3), step(25, 50000, 4)}, MaxSustained: 50000},
			"centrifugo-1": {Fixed: Window{CPUPerMsgUs: 10, Latency: Summary{P99Ms: 8}}, Steps: []Window{step(10, 20000, 5)}, MaxSustained: 20000},
		},
		Idle: map[string]*IdleResult{"parley-1": {RSSPerConn: 10 * 1024}, "centrifugo-1": {RSSPerConn: 40 * 1024}},
	}
	return r
}

func TestMarkdownShowsRatiosAndKeepsTheAnalysis(t *testing.T) {
	r := sampleResult()
	md := r.Markdown("plot.png", "Hand-written findings.", nil)
	for _, want := range []string{"**0.50×** ✓ (5.00 / 10.00 µs)", "**2.50×** ✓", "**0.25×** ✓ (10.0 / 40.0 KB)", "![", "Hand-written findings."} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if got := KeptAnalysis(md); got != "Hand-written findings." {
		t.Fatalf("kept analysis %q", got)
	}
	if KeptAnalysis("no markers") != "" {
		t.Fatal("analysis found without markers")
	}
}

func TestWritePlotMakesAPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	if err := sampleResult().WritePlot(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || len(data) < 1000 || string(data[1:4]) != "PNG" {
		t.Fatalf("plot file: %d bytes, %v", len(data), err)
	}
	if err := (&SuiteResult{}).WritePlot(path); err == nil {
		t.Fatal("plotting no data gave no error")
	}
}
