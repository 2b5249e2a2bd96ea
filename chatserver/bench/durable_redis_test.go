package bench

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The durable target's Redis really fsyncs every write, and the target's
// Stop takes it and its files away.
func TestDurableRedisFsyncsEveryWriteAndStops(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	e := &Env{Dir: t.TempDir()}
	srv := &Server{Name: "centrifugo-2n-aof-test"}
	defer srv.Stop()
	addr, err := e.startDurableRedis(srv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	// CONFIG GET answers an array: *2, $len, name, $len, value.
	for _, want := range []struct{ key, value string }{{"appendonly", "yes"}, {"appendfsync", "always"}, {"save", ""}} {
		if _, err := c.Write([]byte("CONFIG GET " + want.key + "\r\n")); err != nil {
			t.Fatal(err)
		}
		var lines []string
		for len(lines) < 5 {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("CONFIG GET %s: %v", want.key, err)
			}
			lines = append(lines, strings.TrimRight(l, "\r\n"))
		}
		if lines[4] != want.value {
			t.Errorf("CONFIG GET %s = %q, want %q", want.key, lines[4], want.value)
		}
	}
	dir := e.Dir + "/" + srv.Name + "-redis"
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("its directory: %v", err)
	}
	srv.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("its directory is still there after Stop (%v)", err)
	}
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Errorf("Redis still answers on %s after Stop", addr)
	}
}
