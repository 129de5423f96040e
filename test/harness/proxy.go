package harness

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards TCP connections to a member's peer listener and can cut
// the links from chosen members: a cut closes their open connections and
// refuses new ones until healed. The source member is told by the
// connection's source address.
type Proxy struct {
	ln     net.Listener
	target string
	who    func(net.Addr) int

	mu    sync.Mutex
	cut   map[int]bool
	conns map[net.Conn]int
}

// NewProxy listens on listen and forwards to target.
func NewProxy(listen, target string, who func(net.Addr) int) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, who: who, cut: map[int]bool{}, conns: map[net.Conn]int{}}
	go p.serve()
	return p, nil
}

// Addr is where peers connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut drops traffic from the given members (all when none are given).
func (p *Proxy) Cut(from ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(from) == 0 {
		from = []int{-2} // a wildcard
	}
	for _, f := range from {
		p.cut[f] = true
	}
	for c, src := range p.conns {
		if p.cutLocked(src) {
			c.Close()
		}
	}
}

// Heal restores every link.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = map[int]bool{}
}

func (p *Proxy) cutLocked(src int) bool { return p.cut[-2] || p.cut[src] }

// Close stops the proxy.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		src := p.who(in.RemoteAddr())
		p.mu.Lock()
		if p.cutLocked(src) {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.mu.Unlock()
		go p.pipe(in, src)
	}
}

func (p *Proxy) pipe(in net.Conn, src int) {
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	if p.cutLocked(src) {
		p.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	p.conns[in], p.conns[out] = src, src
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}
