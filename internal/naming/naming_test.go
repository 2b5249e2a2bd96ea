package naming

import "testing"

// The names below are a contract with the chat server's config, the
// provisioning steps and people's dashboards: changing one is a breaking change.
func TestNamesAreTheContract(t *testing.T) {
	for got, want := range map[string]string{
		ChildResourceName("team-chat", ""):    "team-chat",
		ChildResourceName("team-chat", "jwt"): "team-chat-jwt",
		ConfigMapName("team-chat"):            "team-chat-config",
		JWTSecretName("team-chat"):            "team-chat-jwt",
		APIKeySecretName("team-chat"):         "team-chat-api-key",
		DatabaseSecretName("team-chat"):       "team-chat-db",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	ex := ExchangeNames("chat", "team-chat")
	if ex.Publications != "parley.chat.team-chat.pub" || ex.Control != "parley.chat.team-chat.control" ||
		ex.DeadLetter != "parley.chat.team-chat.dlx" || ex.DeadLetterQueue != "parley.chat.team-chat.dead-letter" {
		t.Errorf("exchanges = %+v", ex)
	}
	// Namespaces and ChatCluster names are DNS labels (no dots), so the dot
	// between them is unambiguous.
	if a, b := ExchangeNames("a", "b-c"), ExchangeNames("a-b", "c"); a == b {
		t.Errorf("exchanges collide: %+v", a)
	}
}

func TestLabels(t *testing.T) {
	l := WithLabels("team", map[string]string{LabelInstance: "spoofed", "team": "chat"})
	if l[LabelInstance] != "team" || l["team"] != "chat" || l[LabelPartOf] != PartOf {
		t.Errorf("labels = %v: ours must win, extra ones stay", l)
	}
	sel := SelectorLabels("team")
	for k, v := range sel {
		if l[k] != v {
			t.Errorf("labels %v do not carry the selector %v", l, sel)
		}
	}
	if CacheSelector()[LabelPartOf] != PartOf || len(CacheSelector()) != 1 {
		t.Errorf("cache selector = %v", CacheSelector())
	}
}
