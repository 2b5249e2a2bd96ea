// Package tcpproxy is a loopback TCP proxy that tests put between the chat
// server and a shared service (RabbitMQ, PostgreSQL) to cut the connection
// or make the service unreachable without touching the service itself,
// which other test packages use at the same time.
package tcpproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards connections from a loopback listener to a target address.
type Proxy struct {
	target string
	ln     net.Listener

	// stalled black-holes forwarded bytes: connections stay open and
	// nothing arrives, as behind a network partition (no reset, no FIN).
	stalled atomic.Bool

	mu       sync.Mutex
	enabled  bool
	closed   bool
	conns    map[net.Conn]struct{} // both ends of every forwarded connection
	accepted int
	wg       sync.WaitGroup
}

// New starts a proxy to target (host:port) listening on 127.0.0.1 at a free port.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("tcpproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, enabled: true, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted counts connections the proxy forwarded.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// SetTarget sends new connections to target (a load balancer moving clients
// to another replica); existing ones stay until dropped.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Disable cuts every forwarded connection and closes new ones as soon as
// they are accepted, as if the service were down.
func (p *Proxy) Disable() {
	p.mu.Lock()
	p.enabled = false
	p.mu.Unlock()
	p.DropConnections()
}

// Enable forwards new connections again.
func (p *Proxy) Enable() {
	p.mu.Lock()
	p.enabled = true
	p.mu.Unlock()
}

// Stall makes every connection a black hole: open, but what is sent on it
// is never delivered (a partition, not a refusal). Unstall forwards again.
func (p *Proxy) Stall()   { p.stalled.Store(true) }
func (p *Proxy) Unstall() { p.stalled.Store(false) }

// DropConnections cuts every forwarded connection; new ones are still forwarded
// if the proxy is enabled.
func (p *Proxy) DropConnections() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.DropConnections()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		ok, target := p.enabled && !p.closed, p.target
		p.mu.Unlock()
		if !ok {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if !p.enabled || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			continue
		}
		p.accepted++
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst; when either side ends, both are closed so the
// other direction ends too.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.stalled.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
