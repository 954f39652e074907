package rabbitmq_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
)

// freezer is a TCP proxy to addr that, once frozen, stops passing what the
// server sends: the client's frames reach the broker, no reply comes back.
type freezer struct {
	ln     net.Listener
	addr   string
	frozen chan struct{}
	once   sync.Once
	gone   chan struct{} // closed by cut

	mu    sync.Mutex
	conns []net.Conn
}

func newFreezer(t *testing.T, addr string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, addr: addr, frozen: make(chan struct{}), gone: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					select {
					case <-f.frozen:
						<-f.gone // hold the bytes: nothing more reaches the client
						return
					default:
					}
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	return f
}

// frozenURL returns a freezer in front of the test's first node and the
// URL that connects through it.
func frozenURL(t *testing.T) (*freezer, string) {
	t.Helper()
	u, err := url.Parse(oneNode(t))
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	f := newFreezer(t, host)
	u.Host = f.ln.Addr().String()
	return f, u.String()
}

func (f *freezer) freeze() { f.once.Do(func() { close(f.frozen) }) }

// cut closes every proxied connection, as a failed link would.
func (f *freezer) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gone:
	default:
		close(f.gone)
	}
	for _, c := range f.conns {
		c.Close()
	}
}

// Confirms that do not come within ConfirmTimeout fail Publish with
// ErrConfirmTimeout, naming every message still unconfirmed; a channel
// that cannot be opened holds Publish no longer than its context.
func TestConfirmTimeout(t *testing.T) {
	f, u := frozenURL(t)
	b := connect(t, rabbitmq.Options{URL: u, ConfirmTimeout: 300 * time.Millisecond, Heartbeat: time.Minute, PublishChannels: 2})
	defer b.Close()
	defer f.cut() // before Close, which would otherwise wait for the frozen connection
	topic := "confirmtimeout-" + bus.NewID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("confirmed"))); err != nil {
		t.Fatalf("Publish before the freeze: %v", err)
	}
	f.freeze()
	// The next Publish needs the second publish channel, which cannot open
	// now: it returns when its context ends.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	err := b.Publish(short, topic, bus.NewMessage([]byte("no channel")))
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish needing a new channel with the replies frozen: %v, want its context's deadline", err)
	}
	// The one after it goes on the open channel, and waits for confirms.
	start := time.Now()
	msgs := []*bus.Message{bus.NewMessage([]byte("a")), bus.NewMessage([]byte("b")), bus.NewMessage([]byte("c"))}
	err = b.Publish(ctx, topic, msgs...)
	var pe *bus.PublishError
	if !errors.Is(err, rabbitmq.ErrConfirmTimeout) || !errors.As(err, &pe) || len(pe.Unconfirmed) != len(msgs) {
		t.Fatalf("Publish with the replies frozen: %v, want a PublishError naming all %d, matching ErrConfirmTimeout", err, len(msgs))
	}
	if ctx.Err() != nil {
		t.Fatalf("Publish returned after its context ended (%v): the confirm timeout did not end the wait", time.Since(start))
	}
}

// Declarations have no deadline in AMQP: with the node's replies frozen,
// a Publish to a new topic and a Subscribe return when their contexts
// end, not when the heartbeat gives the connection up; and what is known
// already goes on without them.
func TestDeclarationsHonourContext(t *testing.T) {
	f, u := frozenURL(t)
	b := connect(t, rabbitmq.Options{URL: u, Heartbeat: time.Minute})
	defer b.Close()
	defer f.cut()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, "declare-"+bus.NewID(), bus.NewMessage([]byte("before"))); err != nil {
		t.Fatalf("Publish before the freeze: %v", err)
	}
	f.freeze()
	for name, call := range map[string]func(context.Context) error{
		"Publish to a new topic": func(ctx context.Context) error {
			return b.Publish(ctx, "declare-"+bus.NewID(), bus.NewMessage([]byte("frozen")))
		},
		"Subscribe": func(ctx context.Context) error {
			sub, err := b.Subscribe(ctx, "declare-"+bus.NewID(), bus.SubscribeOptions{Group: "g"})
			if err == nil {
				sub.Close()
			}
			return err
		},
		"a second Publish to a new topic": func(ctx context.Context) error {
			return b.Publish(ctx, "declare-"+bus.NewID(), bus.NewMessage([]byte("frozen")))
		},
	} {
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		err := call(short)
		cancelShort()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with the replies frozen: %v, want its context's deadline", name, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s returned after the test's own deadline", name)
		}
	}
}
