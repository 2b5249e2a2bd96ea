package resource

import (
	"testing"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// spec.transports reaches the config: both fallbacks on unless turned off.
// Only "off" is written: "on" is the chat server's default, and leaving it
// out keeps existing clusters' configs (and pods) as they were.
func TestRenderConfigTransports(t *testing.T) {
	off := false
	tests := []struct {
		name            string
		spec            v1alpha1.TransportsSpec
		httpStream, sse bool
	}{
		{"defaults", v1alpha1.TransportsSpec{}, true, true},
		{"sse off", v1alpha1.TransportsSpec{SSE: &off}, true, false},
		{"both off", v1alpha1.TransportsSpec{HTTPStream: &off, SSE: &off}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := RenderConfig(cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Transports = tc.spec }))
			if (cfg.HTTP.HTTPStream != nil) == tc.httpStream || (cfg.HTTP.SSE != nil) == tc.sse {
				t.Errorf("written: httpStream %v, sse %v; want only the ones turned off", cfg.HTTP.HTTPStream, cfg.HTTP.SSE)
			}
			if cfg.HTTP.HTTPStreamEnabled() != tc.httpStream || cfg.HTTP.SSEEnabled() != tc.sse {
				t.Errorf("httpStream %v, sse %v; want %v, %v", cfg.HTTP.HTTPStreamEnabled(), cfg.HTTP.SSEEnabled(), tc.httpStream, tc.sse)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("rendered config invalid: %v", err)
			}
		})
	}
}

// A config that spells the fallback switches out at their default means the
// same as one that leaves them out (as every config did before they
// existed): same hash, no pod restarted; turning one off is a change.
func TestTransportDefaultsHashLikeTheirAbsence(t *testing.T) {
	absent := []byte(`{"http":{"address":":8000","adminAddress":":8001"},"broker":{"type":"memory"},"store":{"type":"memory"},"auth":{"allowAnonymous":true}}`)
	explicit := []byte(`{"http":{"address":":8000","adminAddress":":8001","httpStream":true,"sse":true},"broker":{"type":"memory"},"store":{"type":"memory"},"auth":{"allowAnonymous":true}}`)
	off := []byte(`{"http":{"address":":8000","adminAddress":":8001","sse":false},"broker":{"type":"memory"},"store":{"type":"memory"},"auth":{"allowAnonymous":true}}`)
	a, err := configMeaning(absent)
	if err != nil {
		t.Fatal(err)
	}
	e, err := configMeaning(explicit)
	if err != nil {
		t.Fatal(err)
	}
	o, err := configMeaning(off)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(e) {
		t.Errorf("explicit defaults change the meaning:\n%s\n%s", a, e)
	}
	if string(a) == string(o) {
		t.Error("turning SSE off does not change the meaning")
	}
}

// The command budgets reach the config when the spec sets them, 0 included
// (off); left empty the chat server's defaults stay.
func TestCommandBudgetsReachTheConfig(t *testing.T) {
	def := RenderConfig(cluster())
	if def.Limits.CommandCostPerSecond != 100 || def.Limits.UserCommandCostPerSecond != 300 {
		t.Errorf("defaults: %+v", def.Limits)
	}
	zero, many := int32(0), int32(2000)
	cfg := RenderConfig(cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Limits.CommandCostPerSecond, cc.Spec.Limits.UserCommandCostPerSecond = &many, &zero
	}))
	if cfg.Limits.CommandCostPerSecond != 2000 || cfg.Limits.UserCommandCostPerSecond != 0 {
		t.Errorf("set: %+v", cfg.Limits)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("rendered config invalid: %v", err)
	}
}
