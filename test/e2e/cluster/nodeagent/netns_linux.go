package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a pod's network namespace: only a loopback interface, so every pod
// can listen on the same ports. The agent reaches into it (probes, the host
// forwarders) and lets the pod reach out only to the host endpoints it was
// told to share (RabbitMQ, PostgreSQL, a test's proxy) through forwarders.
type netns struct {
	fdMu     sync.RWMutex
	fd       *os.File // keeps the namespace alive
	fdClosed bool

	mu        sync.Mutex
	listeners []net.Listener
	closed    bool
	conns     sync.WaitGroup
}

// inNamespace runs f on an OS thread switched into the namespace held by fd.
// The thread is never returned to the scheduler's pool: the goroutine exits
// while still locked, so Go discards the thread.
func inNamespace(fd *os.File, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// newNetns creates a network namespace with its loopback interface up.
func newNetns() (*netns, error) {
	type result struct {
		f   *os.File
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			resc <- result{err: fmt.Errorf("create network namespace (the node agent needs CAP_SYS_ADMIN): %w", err)}
			return
		}
		if err := loopbackUp(); err != nil {
			resc <- result{err: err}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		resc <- result{f: f, err: err}
	}()
	r := <-resc
	if r.err != nil {
		return nil, r.err
	}
	return &netns{fd: r.f}, nil
}

func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// do runs f on a thread inside the namespace, unless it was closed.
func (n *netns) do(f func() error) error {
	n.fdMu.RLock()
	defer n.fdMu.RUnlock()
	if n.fdClosed {
		return errors.New("pod network namespace closed")
	}
	return inNamespace(n.fd, f)
}

// Dial connects to address from inside the namespace.
func (n *netns) Dial(ctx context.Context, address string) (net.Conn, error) {
	var conn net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", address)
		return err
	})
	return conn, err
}

// ShareHostEndpoint makes the host's address (e.g. 127.0.0.1:5672) reachable
// at the same address inside the namespace.
func (n *netns) ShareHostEndpoint(address string) error {
	var l net.Listener
	if err := n.do(func() error {
		var err error
		l, err = net.Listen("tcp", address)
		return err
	}); err != nil {
		return fmt.Errorf("share %s into the pod: %w", address, err)
	}
	return n.serve(l, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", address)
	})
}

// Expose listens on the host address and forwards every connection to port
// inside the namespace.
func (n *netns) Expose(hostAddress string, port int) error {
	l, err := net.Listen("tcp", hostAddress)
	if err != nil {
		return fmt.Errorf("listen on %s for the pod: %w", hostAddress, err)
	}
	target := fmt.Sprintf("127.0.0.1:%d", port)
	return n.serve(l, func(ctx context.Context) (net.Conn, error) { return n.Dial(ctx, target) })
}

func (n *netns) serve(l net.Listener, dial func(context.Context) (net.Conn, error)) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = l.Close()
		return errors.New("network namespace closed")
	}
	n.listeners = append(n.listeners, l)
	n.conns.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				up, err := dial(ctx)
				cancel()
				if err != nil {
					_ = c.Close()
					return
				}
				splice(c, up)
			}()
		}
	}()
	return nil
}

// Close stops the forwarders and releases the namespace; it disappears once
// the last process in it has exited. Established connections are left to end
// with the processes they belong to.
func (n *netns) Close() {
	n.mu.Lock()
	n.closed = true
	ls := n.listeners
	n.listeners = nil
	n.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	n.conns.Wait()
	n.fdMu.Lock()
	n.fdClosed = true
	_ = n.fd.Close()
	n.fdMu.Unlock()
}

// splice copies both ways until either side ends, then closes both.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// Half-close so the other direction can drain, then tear down.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
