package tcpproxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/leakcheck"

	"github.com/parley-chat/parley/chatserver/internal/tcpproxy"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// echoServer echoes lines back until the listener closes.
func echoServer(t *testing.T) string { return prefixServer(t, "") }

// prefixServer echoes each line back with prefix in front.
func prefixServer(t *testing.T, prefix string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						_ = c.Close()
						return
					}
					if _, err := io.WriteString(c, prefix+line); err != nil {
						_ = c.Close()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestForwardsDropsAndRefuses(t *testing.T) {
	p, err := tcpproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.DropConnections()
	if _, err := roundTrip(c, "again"); err == nil {
		t.Fatal("a dropped connection still works")
	}

	p.Disable()
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if _, err := roundTrip(c2, "x"); err == nil {
			t.Fatal("a disabled proxy forwarded a connection")
		}
		c2.Close()
	}

	p.Enable()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "back"); err != nil || got != "back\n" {
		t.Fatalf("after Enable: %q, %v", got, err)
	}
	if p.Accepted() != 2 {
		t.Fatalf("Accepted = %d, want 2", p.Accepted())
	}
}

func TestBadTarget(t *testing.T) {
	if _, err := tcpproxy.New("no-port"); err == nil {
		t.Fatal("New accepted a target without a port")
	}
}

func TestSetTargetMovesNewConnections(t *testing.T) {
	first, second := prefixServer(t, "1:"), prefixServer(t, "2:")
	p, err := tcpproxy.New(first)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c1, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if got, err := roundTrip(c1, "one"); err != nil || got != "1:one\n" {
		t.Fatalf("%q, %v", got, err)
	}
	p.SetTarget(second)
	p.DropConnections()
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "two"); err != nil || got != "2:two\n" {
		t.Fatalf("after SetTarget: %q, %v", got, err)
	}
}
