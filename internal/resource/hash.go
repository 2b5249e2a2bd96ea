package resource

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/parley-chat/parley/chatserver/config"
)

// configHash digests what the pods read at start: the meaning of the rendered
// config and the restart-on-change Secrets. Nothing about the operator itself
// (its version, its flags, the labels and annotations it puts on objects) goes
// in: an operator upgrade that renders a config of the same meaning for the
// same Secrets keeps the hash, and so the pods.
func configHash(c Cluster) (string, error) {
	data, err := RenderConfigJSON(c)
	if err != nil {
		return "", err
	}
	meaning, err := configMeaning(data)
	if err != nil {
		return "", err
	}
	return Hash([]byte("config-meaning/v1"), meaning, []byte(c.SecretsHash)), nil
}

// configMeaning is the config as the chat server ends up with it, in one
// canonical spelling: parsed the way the server parses it (over its defaults,
// so a key written out with its default value means the same as the key left
// out), then encoded compactly with object keys sorted. The indentation, the
// order of the fields in the Go type and a key spelled out at its default no
// longer change the hash; a value the server would see differently does.
func configMeaning(rendered []byte) ([]byte, error) {
	cfg, err := config.Parse(rendered)
	if err != nil {
		return nil, fmt.Errorf("config hash: the rendered config does not parse: %w", err)
	}
	normalizeDefaults(&cfg)
	typed, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("config hash: %w", err)
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(typed))
	dec.UseNumber() // keep integers exactly as written
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("config hash: %w", err)
	}
	// encoding/json writes map keys sorted: one spelling per meaning.
	return json.Marshal(generic)
}

// normalizeDefaults spells the switches whose default the server applies
// when the key is absent (pointer fields: absent means on) one way: absent
// when on, false when off. A config that writes "httpStream": true means the
// same as one that leaves it out, and one written before the key existed.
func normalizeDefaults(cfg *config.Config) {
	off := false
	if cfg.HTTP.HTTPStreamEnabled() {
		cfg.HTTP.HTTPStream = nil
	} else {
		cfg.HTTP.HTTPStream = &off
	}
	if cfg.HTTP.SSEEnabled() {
		cfg.HTTP.SSE = nil
	} else {
		cfg.HTTP.SSE = &off
	}
}

// legacyConfigHash is the config hash as operators up to 0.1.0 computed it:
// the digest of the indented rendering itself, not of its meaning. A pod
// template that still carries it for this config is kept as it is (see
// keepEquivalentConfigHash), so changing the formula rolls no pod. It
// matches while this build renders the config byte for byte as 0.1.0 did,
// which the golden ConfigMaps (testdata/golden) hold in place.
func legacyConfigHash(c Cluster) (string, error) {
	data, err := RenderConfigJSON(c)
	if err != nil {
		return "", err
	}
	return Hash(data, []byte(c.SecretsHash)), nil
}

// keepEquivalentConfigHash returns the config hash the live pod template
// should carry: the one it has when that digests the same config by an
// earlier formula, else the new one. Without this, the first reconcile after
// an upgrade that changed only how the hash is computed would roll every pod.
func keepEquivalentConfigHash(c Cluster, live, desired string) (string, error) {
	if live == "" || live == desired {
		return desired, nil
	}
	legacy, err := legacyConfigHash(c)
	if err != nil {
		return "", err
	}
	if live == legacy {
		return live, nil
	}
	return desired, nil
}
