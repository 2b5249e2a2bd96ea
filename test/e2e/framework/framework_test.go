package framework

import "testing"

func TestHostPortDefaultsTheSchemesPort(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/":                          "127.0.0.1:5672",
		"amqp://guest:guest@127.0.0.1/vhost":                          "127.0.0.1:5672",
		"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable": "127.0.0.1:5432",
		"postgresql://u:p@localhost/db":                               "localhost:5432",
		"http://127.0.0.1:15672":                                      "127.0.0.1:15672",
		"http://rabbitmq/":                                            "rabbitmq:80",
	} {
		if got, err := HostPort(in); err != nil || got != want {
			t.Errorf("HostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := HostPort("redis://example/"); err == nil {
		t.Error("a URL without port and with an unknown scheme was accepted")
	}
}
