package config

import (
	"strings"
	"testing"
)

// The admin listener defaults to :8001, must be a host:port, and must never
// share the public listener's port: the split is what keeps /api and
// /metrics off the public port.
func TestListenerAddresses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		http      string
		wantAdmin string
		wantErr   string
	}{
		{"defaults", `{}`, ":8001", ""},
		{"own admin address", `{"address":":9000","adminAddress":"127.0.0.1:9001"}`, "127.0.0.1:9001", ""},
		{"same port, other host", `{"address":"10.0.0.1:8000","adminAddress":"127.0.0.1:8000"}`, "127.0.0.1:8000", ""},
		{"both on free ports", `{"address":"127.0.0.1:0","adminAddress":"127.0.0.1:0"}`, "127.0.0.1:0", ""},
		{"same address", `{"address":":8000","adminAddress":":8000"}`, "", "http.adminAddress: \":8000\" must differ from http.address"},
		{"wildcard covers loopback", `{"address":"0.0.0.0:8000","adminAddress":"127.0.0.1:8000"}`, "", "http.adminAddress: \"127.0.0.1:8000\" must differ from http.address"},
		{"empty admin address", `{"adminAddress":""}`, "", "http.adminAddress: must not be empty"},
		{"not host:port", `{"adminAddress":"8001"}`, "", "http.adminAddress: \"8001\" is not host:port"},
		{"public not host:port", `{"address":"localhost"}`, "", "http.address: \"localhost\" is not host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(`{"http":` + tc.http + `,"auth":{"allowAnonymous":true}}`))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HTTP.AdminAddress != tc.wantAdmin {
				t.Fatalf("http.adminAddress = %q, want %q", cfg.HTTP.AdminAddress, tc.wantAdmin)
			}
		})
	}
}
