package config

import (
	"strings"
	"testing"
)

// The keys issue 18 added are validated with messages naming the key.
func TestIssue18KeysValidate(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"anonymous publish needs anonymous", `{"auth":{"allowAnonymous":true},"namespaces":[{"name":"demo","allowAnonymousPublish":true}]}`, "namespaces[0].allowAnonymous: must be true"},
		{"anonymous presence needs anonymous", `{"auth":{"allowAnonymous":true},"namespaces":[{"name":"demo","presence":true,"allowAnonymousPresence":true}]}`, "namespaces[0].allowAnonymous: must be true"},
		{"unknown delta type", `{"auth":{"allowAnonymous":true},"namespaces":[{"name":"room","allowedDeltaTypes":["xdelta"]}]}`, `namespaces[0].allowedDeltaTypes[0]: must be fossil, got "xdelta"`},
		{"negative command budget", `{"auth":{"allowAnonymous":true},"limits":{"commandCostPerSecond":-1}}`, "limits.commandCostPerSecond: must not be negative"},
		{"negative user budget", `{"auth":{"allowAnonymous":true},"limits":{"userCommandCostPerSecond":-1}}`, "limits.userCommandCostPerSecond: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg, err := Parse([]byte(`{"auth":{"allowAnonymous":true,"allowTokensWithoutExpiry":true},"namespaces":[{"name":"demo","presence":true,"allowAnonymous":true,"allowAnonymousPublish":true,"allowAnonymousPresence":true,"allowBinary":true,"allowedDeltaTypes":["fossil"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := Default().Limits; d.CommandCostPerSecond != 100 || d.UserCommandCostPerSecond != 300 || cfg.Limits.CommandCostPerSecond != 100 {
		t.Fatalf("budget defaults %+v", d)
	}
}
