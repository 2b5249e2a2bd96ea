package resource

import (
	"testing"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// spec.transports reaches the config: both fallbacks on unless turned off,
// and written out either way so the ConfigMap says what is served.
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
			if cfg.HTTP.HTTPStream == nil || cfg.HTTP.SSE == nil {
				t.Fatalf("transports not written: httpStream %v, sse %v", cfg.HTTP.HTTPStream, cfg.HTTP.SSE)
			}
			if *cfg.HTTP.HTTPStream != tc.httpStream || *cfg.HTTP.SSE != tc.sse {
				t.Errorf("httpStream %v, sse %v; want %v, %v", *cfg.HTTP.HTTPStream, *cfg.HTTP.SSE, tc.httpStream, tc.sse)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("rendered config invalid: %v", err)
			}
		})
	}
}
