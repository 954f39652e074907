package chaos

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DelayMark is the socket mark of the delay proxy's own connections to
// the cluster: the redirect of scripts/clusters (`link redirect PORT`)
// lets them through instead of sending them back to the proxy.
const DelayMark = 0x4f4d

// DelayProxy is a transparent TCP relay that adds latency: connections
// that the client namespace's redirect sends to it are relayed to where
// they were going (their original destination), every chunk of bytes
// held back for the current delay in each direction. Go has no netem on
// this kernel; this is the latency half of it. Delay 0 relays at once.
type DelayProxy struct {
	ln    net.Listener
	delay atomic.Int64 // nanoseconds, each way
	wg    sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// ListenDelay starts a DelayProxy on a free loopback port.
func ListenDelay() (*DelayProxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Port is the proxy's port on 127.0.0.1.
func (p *DelayProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetDelay sets the latency added to each direction of every connection
// from now on.
func (p *DelayProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops accepting and closes every relayed connection.
func (p *DelayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track adds the relay's two connections to those Close closes, unless
// the proxy is closed already; untrack removes them.
func (p *DelayProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *DelayProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c.(*net.TCPConn))
		}()
	}
}

func (p *DelayProxy) relay(down *net.TCPConn) {
	defer down.Close()
	dst, err := originalDst(down)
	if err != nil {
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, DelayMark)
		}); err != nil {
			return err
		}
		return serr
	}}
	up, err := d.Dial("tcp4", dst)
	if err != nil {
		return
	}
	defer up.Close()
	if !p.track(down, up) {
		return
	}
	defer p.untrack(down, up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, down); done <- struct{}{} }()
	go func() { p.pipe(down, up); done <- struct{}{} }()
	<-done
	// One side ended: end the other too.
	down.Close()
	up.Close()
	<-done
}

// pipe copies from src to dst, each chunk written once the delay has
// passed since it was read.
func (p *DelayProxy) pipe(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{buf[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if wait := time.Until(c.at.Add(time.Duration(p.delay.Load()))); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := dst.Write(c.b); err != nil {
			// Drain so that the reader is not stuck on a full queue.
			for range q {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// originalDst is where a redirected connection was going, from
// SO_ORIGINAL_DST (netfilter's conntrack; IPv4 only).
func originalDst(c *net.TCPConn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	const soOriginalDst = 80
	var addr *syscall.IPv6Mreq
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		// A sockaddr_in fits in the 20 bytes of an IPv6Mreq.
		addr, gerr = syscall.GetsockoptIPv6Mreq(int(fd), syscall.IPPROTO_IP, soOriginalDst)
	}); err != nil {
		return "", err
	}
	if gerr != nil {
		return "", fmt.Errorf("SO_ORIGINAL_DST: %w (is the connection redirected?)", gerr)
	}
	raw := addr.Multiaddr
	port := binary.BigEndian.Uint16(raw[2:4])
	ip := net.IPv4(raw[4], raw[5], raw[6], raw[7])
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), nil
}
