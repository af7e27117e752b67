package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
)

// tcpProxy forwards 127.0.0.1 connections to a target and can break them
// all at once while it keeps accepting new ones: a network blip between
// an agent and the manager, with both processes untouched.
type tcpProxy struct {
	ln net.Listener
	// targets are dialed in turn, one per accepted connection, skipping
	// those that refuse: one target is a proxy, several a TCP load
	// balancer in front of replicas.
	targets []string
	next    int

	mu       sync.Mutex // guards conns and accepted
	conns    map[net.Conn]struct{}
	accepted int
	wg       sync.WaitGroup
}

func startProxy(t testing.TB, target string) *tcpProxy {
	return startBalancer(t, target)
}

// startBalancer is a proxy that spreads its connections over targets in
// turn, as a TCP load balancer in front of replicas does; a target that
// refuses is skipped for the next.
func startBalancer(t testing.TB, targets ...string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &tcpProxy{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

// Accepted is how many connections the proxy has accepted.
func (p *tcpProxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *tcpProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := p.dial()
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.accepted++
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			// One direction ended: end both, as a broken link would.
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Go(func() { pipe(out, in) })
		p.wg.Go(func() { pipe(in, out) })
	}
}

// dial connects to the next target that accepts.
func (p *tcpProxy) dial() (net.Conn, error) {
	var err error
	for range p.targets {
		target := p.targets[p.next%len(p.targets)]
		p.next++
		var out net.Conn
		if out, err = net.Dial("tcp", target); err == nil {
			return out, nil
		}
	}
	return nil, err
}

// DropAll closes every open connection (both sides) and returns how many
// client connections it broke. New connections are still accepted.
func (p *tcpProxy) DropAll() int {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns) / 2
}

func (p *tcpProxy) close() {
	p.ln.Close()
	p.DropAll()
	p.wg.Wait()
}
