package redisstream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
)

// cutProxy forwards TCP connections to a Redis server. Once armed with
// cutAfter(n), it passes n more reply lines from the server and then drops
// every connection, as a network failure in the middle of a pipeline would.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	armed bool
	lines int // reply lines still passed once armed
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) cutAfter(lines int) {
	p.mu.Lock()
	p.armed, p.lines = true, lines
	p.mu.Unlock()
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
		go func() { defer p.wg.Done(); p.replies(c, s); c.Close() }()
	}
}

// replies copies server replies to the client, counting lines once armed.
func (p *cutProxy) replies(c, s net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			p.mu.Lock()
			cut := false
			if p.armed {
				for i := 0; i < len(chunk); i++ {
					if chunk[i] == '\n' {
						p.lines--
						if p.lines == 0 {
							chunk, cut = chunk[:i+1], true
							break
						}
					}
				}
			}
			p.mu.Unlock()
			c.Write(chunk)
			if cut {
				p.dropAll()
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.armed = false
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.dropAll()
	p.wg.Wait()
}

// TestPublishPartialFailure: when the connection breaks after Redis
// confirmed part of a batch, Publish names exactly the messages whose
// confirmation it did not get.
func TestPublishPartialFailure(t *testing.T) {
	o := options(t)
	proxy := newCutProxy(t, o.Addr)
	o.Addr = proxy.addr()
	b := newBroker(t, o)
	ctx := context.Background()
	topic := topicName(t)
	// The pipeline's connection is set up (its handshake passed) before
	// the cut is armed.
	publish(t, b, topic, bus.NewMessage([]byte("warm")), bus.NewMessage([]byte("up")))

	const confirmed = 3
	msgs := make([]*bus.Message, 10)
	for i := range msgs {
		msgs[i] = bus.NewMessage(bytes.Repeat([]byte{'x'}, 100))
	}
	proxy.cutAfter(2 * confirmed) // an XADD reply is a bulk string: two lines
	err := b.Publish(ctx, topic, msgs...)
	var pe *bus.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish: %v, want a *bus.PublishError", err)
	}
	want := []int{3, 4, 5, 6, 7, 8, 9}
	if !slices.Equal(pe.Unconfirmed, want) {
		t.Fatalf("Unconfirmed = %v, want %v", pe.Unconfirmed, want)
	}
	// The batch was written before the cut, so Redis stored all of it:
	// unconfirmed means "may or may not be stored".
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("after the cut"))); err != nil {
		t.Fatalf("Publish after a dropped connection: %v", err)
	}
}
