// Package clients connects the benchmark engine to a broker through code
// other than the omnibus adapters: the broker's own Go client used
// directly ("raw"), and the watermill pub/subs. Each connection is a
// bus.Broker only so that bench.Measure can drive it; the raw ones do the
// least that workload needs — one topic layout like the omnibus adapter's,
// the message body and nothing else on the wire, no retries, no
// dead-lettering, no attempt counting — so that the gap between a raw
// client and its omnibus adapter is what the adapter costs.
package clients

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/omnibus-mq/omnibus/bus"
)

// delivery is one received message and the function that acks it.
type delivery struct {
	msg     bus.Message
	ack     func(ctx context.Context) error
	nack    func() // optional: what Nack tells the client
	settled atomic.Bool
	release func()
}

func (d *delivery) Message() *bus.Message { return &d.msg }

func (d *delivery) Ack(ctx context.Context) error {
	if d.settled.Swap(true) {
		return bus.ErrAlreadyAcked
	}
	defer d.release()
	return d.ack(ctx)
}

// Nack is not part of any workload the comparisons run: most raw clients
// leave the message unacked, which the broker redelivers when the
// subscription closes.
func (d *delivery) Nack(context.Context, bus.NackOptions) error {
	if d.settled.Swap(true) {
		return bus.ErrAlreadyAcked
	}
	if d.nack != nil {
		d.nack()
	}
	d.release()
	return nil
}

// feed is a subscription fed by one fetching goroutine: it holds the
// deliveries fetched and not yet received, and the window of unsettled
// ones.
type feed struct {
	ch      chan *delivery
	tokens  chan struct{} // one per delivery that may be unsettled
	done    chan struct{}
	once    sync.Once
	stop    func() error // closes the client's side
	wg      sync.WaitGroup
	closing atomic.Bool
}

func newFeed(prefetch int, stop func() error) *feed {
	if prefetch <= 0 {
		prefetch = 1
	}
	f := &feed{ch: make(chan *delivery, prefetch), tokens: make(chan struct{}, prefetch), done: make(chan struct{}), stop: stop}
	for range prefetch {
		f.tokens <- struct{}{}
	}
	return f
}

// take waits for room for one more unsettled delivery, then takes as
// much more room as is free, up to most; it returns how much it took.
func (f *feed) take(ctx context.Context, most int) int {
	select {
	case <-f.tokens:
	case <-ctx.Done():
		return 0
	case <-f.done:
		return 0
	}
	n := 1
	for n < most {
		select {
		case <-f.tokens:
			n++
		default:
			return n
		}
	}
	return n
}

func (f *feed) give(n int) {
	for range n {
		f.tokens <- struct{}{}
	}
}

func (f *feed) push(d *delivery) {
	d.release = func() { f.give(1) }
	select {
	case f.ch <- d:
	case <-f.done:
	}
}

func (f *feed) Receive(ctx context.Context) (bus.Delivery, error) {
	select {
	case d := <-f.ch:
		return d, nil
	case <-f.done:
		return nil, bus.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *feed) Close() error {
	var err error
	f.once.Do(func() {
		f.closing.Store(true)
		close(f.done)
		f.wg.Wait()
		err = f.stop()
	})
	return err
}

// subs tracks a connection's subscriptions so Close can close them.
type subs struct {
	mu     sync.Mutex
	open   []*feed
	closed bool
}

func (s *subs) add(f *feed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return bus.ErrClosed
	}
	s.open = append(s.open, f)
	return nil
}

func (s *subs) closeAll() error {
	s.mu.Lock()
	open := s.open
	s.open, s.closed = nil, true
	s.mu.Unlock()
	var errs []error
	for _, f := range open {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
