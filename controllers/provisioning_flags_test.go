package controllers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/controllers"
)

func TestProvisioningFlags(t *testing.T) {
	defaults := controllers.Provisioning{
		CleanupRetryFor:   controllers.DefaultCleanupRetryFor,
		CleanupBackoff:    controllers.DefaultCleanupBackoff,
		CleanupMaxBackoff: controllers.DefaultCleanupMaxBackoff,
		CallTimeout:       controllers.DefaultCallTimeout,

		ConnectTimeout:     controllers.DefaultConnectTimeout,
		BackendConcurrency: controllers.DefaultBackendConcurrency,
		UnreachableBackoff: controllers.DefaultUnreachableBackoff,
	}
	for _, tc := range []struct {
		name   string
		change func(p *controllers.Provisioning)
		want   string // "" for valid
	}{
		{"the manager's defaults", func(*controllers.Provisioning) {}, ""},
		{"an explicit check interval", func(p *controllers.Provisioning) { p.CheckInterval = time.Minute }, ""},
		{"retries for a minute", func(p *controllers.Provisioning) { p.CleanupRetryFor = time.Minute }, ""},
		{"no retry period", func(p *controllers.Provisioning) { p.CleanupRetryFor = 0 }, "--cleanup-retry-for=0s"},
		{"a retry period beyond the cap", func(p *controllers.Provisioning) { p.CleanupRetryFor = controllers.MaxCleanupRetryFor + time.Hour }, "--cleanup-retry-for=721h0m0s"},
		{"a cap below the backoff", func(p *controllers.Provisioning) { p.CleanupMaxBackoff = time.Second }, "--cleanup-max-backoff=1s"},
		{"no backoff", func(p *controllers.Provisioning) { p.CleanupBackoff = 0 }, "--cleanup-backoff=0s"},
		{"no call timeout", func(p *controllers.Provisioning) { p.CallTimeout = -time.Second }, "--external-call-timeout=-1s"},
		{"a connect timeout beyond the call timeout", func(p *controllers.Provisioning) { p.ConnectTimeout = time.Minute }, "--external-connect-timeout=1m0s"},
		{"no backend concurrency", func(p *controllers.Provisioning) { p.BackendConcurrency = 0 }, "--backend-concurrency=0"},
		{"no unreachable backoff", func(p *controllers.Provisioning) { p.UnreachableBackoff = 0 }, "--unreachable-backoff=0s"},
		{"negative check interval", func(p *controllers.Provisioning) { p.CheckInterval = -time.Second }, "--external-check-interval=-1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaults
			tc.change(&p)
			err := p.ValidateFlags()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
