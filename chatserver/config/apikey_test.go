package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestAPIKeyFiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		paths   []string
		wantErr string
	}{
		{"none: API disabled", `{"auth":{"allowAnonymous":true}}`, nil, ""},
		{"single file", `{"http":{"apiKeyFile":"/k/api-key"},"auth":{"allowAnonymous":true}}`, []string{"/k/api-key"}, ""},
		{"current and previous", `{"http":{"apiKeyFiles":["/k/api-key","/k/api-key-previous"]},"auth":{"allowAnonymous":true}}`,
			[]string{"/k/api-key", "/k/api-key-previous"}, ""},
		{"both forms", `{"http":{"apiKeyFile":"/k/a","apiKeyFiles":["/k/b"]},"auth":{"allowAnonymous":true}}`, nil, "http.apiKeyFiles: set http.apiKeyFile or http.apiKeyFiles, not both"},
		{"empty entry", `{"http":{"apiKeyFiles":["/k/a"," "]},"auth":{"allowAnonymous":true}}`, nil, "http.apiKeyFiles[1]: must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.HTTP.APIKeyPaths(); !reflect.DeepEqual(got, tc.paths) {
				t.Fatalf("APIKeyPaths() = %v, want %v", got, tc.paths)
			}
			// The rendered form loads back the same.
			data, err := cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(data)
			if err != nil || !reflect.DeepEqual(again.HTTP.APIKeyPaths(), tc.paths) {
				t.Fatalf("round trip: %v %v", again.HTTP.APIKeyPaths(), err)
			}
		})
	}
}
