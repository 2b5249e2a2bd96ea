package cluster

import (
	"io"
	"net"
	"sync"
	"time"
)

// TCPProxy forwards connections from pods to a service of this machine
// that listens only on loopback (RabbitMQ, PostgreSQL): it listens on the
// host's end of the node's link, the address a Service without a selector
// points at, as a cluster reaches a managed service outside it. A test can
// make the service unreachable without touching it (other test packages use
// the same server at the same time).
type TCPProxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	disabled bool
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// NewTCPProxy listens on listen (host:port; port 0 picks a free one) and
// forwards to target.
func NewTCPProxy(listen, target string) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address (host:port).
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Disable cuts every connection and closes new ones as soon as they arrive,
// as if the service were down.
func (p *TCPProxy) Disable() {
	p.mu.Lock()
	p.disabled = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// Enable forwards new connections again.
func (p *TCPProxy) Enable() {
	p.mu.Lock()
	p.disabled = false
	p.mu.Unlock()
}

// Close stops the proxy and cuts every connection.
func (p *TCPProxy) Close() {
	_ = p.ln.Close()
	p.Disable()
	p.wg.Wait()
}

func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
		_ = c.Close()
	}
	p.mu.Unlock()
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil || !p.track(up) {
				if up != nil {
					_ = up.Close()
				}
				p.untrack(c)
				return
			}
			done := make(chan struct{}, 2)
			cp := func(dst, src net.Conn) { _, _ = io.Copy(dst, src); done <- struct{}{} }
			go cp(up, c)
			go cp(c, up)
			<-done
			p.untrack(c, up) // either side ending ends both
			<-done
		}()
	}
}
