package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// subscription is the portable bus.Subscription over a driver's. A
// goroutine of its own (fill) keeps the window full: it asks the driver
// for as many deliveries as the window has room for and buffers them
// until Receive hands them out. The window counts what is buffered, what
// is handed out and unsettled, and what is being settled, so at most
// Prefetch deliveries are ever held.
type subscription struct {
	b     *Broker
	d     Subscription
	topic string
	opts  bus.SubscribeOptions

	ctx      context.Context // the fill loop's; cancelled by Close
	cancel   context.CancelFunc
	filled   chan struct{} // closed when the fill loop has returned
	room     chan struct{} // pokes the fill loop: the window may have room
	done     chan struct{} // closed by Close
	settling sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	buf     []*delivery            // received, not handed out
	out     map[*delivery]struct{} // handed out, unsettled
	held    int                    // buffered + handed out + being settled
	wake    chan struct{}          // closed when buf gains entries
	failure error                  // a lasting failure for the next Receive
	final   error                  // ends the subscription

	lastLogged string
	loggedAt   time.Time

	closeOnce sync.Once
	closeErr  error
}

func newSubscription(b *Broker, d Subscription, topic string, opts bus.SubscribeOptions) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	return &subscription{
		b: b, d: d, topic: topic, opts: opts,
		ctx: ctx, cancel: cancel,
		filled: make(chan struct{}),
		room:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		out:    map[*delivery]struct{}{},
		wake:   make(chan struct{}),
	}
}

func (s *subscription) start() { go s.fill() }

// Receive hands out the next delivery. See bus.Subscription.
func (s *subscription) Receive(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, bus.ErrClosed
		case s.failure != nil:
			err := s.failure
			s.failure = nil
			s.mu.Unlock()
			return nil, err
		case len(s.buf) > 0:
			d := s.buf[0]
			s.buf[0] = nil
			s.buf = s.buf[1:]
			if h, ok := d.d.(HandOff); ok && !h.HandOff() {
				// Taken back while it waited here.
				s.held--
				s.mu.Unlock()
				s.poke()
				continue
			}
			s.out[d] = struct{}{}
			dry := len(s.buf) == 0
			s.mu.Unlock()
			if dry {
				// The fill loop may be saving room for a larger batch.
				s.poke()
			}
			return d, nil
		case s.final != nil:
			err := s.final
			s.mu.Unlock()
			return nil, err
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *subscription) poke() {
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// want is how many deliveries to ask the driver for now: none while the
// buffer still feeds Receive and less than half the window is free, so
// that a busy subscription receives in batches rather than one delivery
// per settlement.
func (s *subscription) want() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.opts.Prefetch - s.held
	if free <= 0 || (len(s.buf) > 0 && free < (s.opts.Prefetch+1)/2) {
		return 0
	}
	return free
}

// fill keeps the window full until Close.
func (s *subscription) fill() {
	defer close(s.filled)
	var pause time.Duration
	for s.ctx.Err() == nil {
		n := s.want()
		if n == 0 {
			select {
			case <-s.room:
			case <-s.ctx.Done():
			}
			continue
		}
		ds, err := s.d.Receive(s.ctx, n)
		s.accept(ds)
		switch {
		case err == nil:
			pause = 0
			continue
		case s.ctx.Err() != nil:
			return
		case errors.Is(err, bus.ErrClosed):
			s.mu.Lock()
			s.final = err
			close(s.wake)
			s.wake = make(chan struct{})
			s.mu.Unlock()
			return
		}
		s.report(err)
		pause = min(max(2*pause, 50*time.Millisecond), 5*time.Second)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
	}
}

// report logs a failure of the driver's Receive, once per distinct
// failure every 10s, and keeps a lasting one for the next Receive.
func (s *subscription) report(err error) {
	s.mu.Lock()
	if IsLasting(err) {
		s.failure = err
		close(s.wake)
		s.wake = make(chan struct{})
	}
	quiet := err.Error() == s.lastLogged && time.Since(s.loggedAt) < 10*time.Second
	if !quiet {
		s.lastLogged, s.loggedAt = err.Error(), time.Now()
	}
	s.mu.Unlock()
	if !quiet {
		s.b.log.Warn(s.b.name+": receiving failed; retrying", "topic", s.topic, "group", s.opts.Group, "error", err)
	}
}

// accept buffers received deliveries. A delivery that is malformed, or
// that was delivered more than MaxAttempts times without being settled
// (its consumers crashed or gave it back), is dead-lettered instead.
func (s *subscription) accept(ds []Delivery) {
	if len(ds) == 0 {
		return
	}
	keep := make([]*delivery, 0, len(ds))
	for _, dd := range ds {
		m := dd.Message()
		var reason error
		attempts := m.Attempt
		if mf, ok := dd.(Malformed); ok {
			reason = mf.Malformed()
		}
		if reason == nil && s.opts.MaxAttempts > 0 && m.Attempt > s.opts.MaxAttempts {
			attempts = m.Attempt - 1
			reason = fmt.Errorf("%s: delivered %d times without being settled", s.b.name, attempts)
		}
		if reason == nil {
			keep = append(keep, &delivery{s: s, d: dd})
			continue
		}
		// Settled here, before anyone saw it; the window never counted it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), settleTimeout)
		err := dd.DeadLetter(ctx, s.opts.DeadLetterTopic, deadLetter(m, s.topic, s.opts.Group, reason, attempts, time.Now()))
		cancel()
		if err != nil {
			s.b.log.Warn(s.b.name+": dead-lettering failed; the message comes back", "topic", s.topic,
				"group", s.opts.Group, "id", m.ID, "reason", reason, "error", err)
		}
	}
	if len(keep) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Kept even when closed: Close gives the buffer back.
	s.buf = append(s.buf, keep...)
	s.held += len(keep)
	close(s.wake)
	s.wake = make(chan struct{})
}

// settleTimeout bounds a settlement the portable side makes on its own.
const settleTimeout = 30 * time.Second

// Close stops intake, waits for settlements under way, and has the driver
// give back everything the subscription still holds. See
// bus.Subscription.
func (s *subscription) Close() error { return s.close(context.Background()) }

func (s *subscription) close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.mu.Unlock()
		s.cancel()
		<-s.filled
		waited := make(chan struct{})
		go func() { s.settling.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-ctx.Done():
		}
		s.mu.Lock()
		unhanded := make([]Delivery, len(s.buf))
		for i, d := range s.buf {
			unhanded[i] = d.d
		}
		s.buf = nil
		unsettled := make([]Delivery, 0, len(s.out))
		for d := range s.out {
			unsettled = append(unsettled, d.d)
		}
		clear(s.out)
		s.mu.Unlock()
		s.closeErr = s.d.Close(ctx, unhanded, unsettled)
		s.b.forget(s)
	})
	return s.closeErr
}

// delivery is the portable bus.Delivery over a driver's.
type delivery struct {
	s       *subscription
	d       Delivery
	settled atomic.Bool
}

func (d *delivery) Message() *bus.Message { return d.d.Message() }

// begin starts the settlement: it fails after Close and on a second
// settlement.
func (d *delivery) begin() error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return bus.ErrClosed
	}
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrAlreadyAcked
	}
	delete(s.out, d)
	s.settling.Add(1)
	return nil
}

// end finishes a settlement and frees its room in the window.
func (d *delivery) end() {
	s := d.s
	s.mu.Lock()
	s.held--
	s.mu.Unlock()
	s.poke()
	s.settling.Done()
}

// Ack tells the broker the message was processed. See bus.Delivery.
func (d *delivery) Ack(ctx context.Context) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.end()
	return d.d.Ack(ctx)
}

// Nack retries the message, postpones it, or moves it to the dead-letter
// topic: with opts.DeadLetter, or when a failed delivery was the last of
// MaxAttempts. DeadLetter wins over Postpone. See bus.Delivery.
func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.end()
	s := d.s
	m := d.d.Message()
	if opts.DeadLetter || (!opts.Postpone && exhausted(s.opts, m.Attempt)) {
		dead := deadLetter(m, s.topic, s.opts.Group, opts.Reason, m.Attempt, time.Now())
		return d.d.DeadLetter(ctx, s.opts.DeadLetterTopic, dead)
	}
	attempts := m.Attempt
	if opts.Postpone {
		attempts--
	}
	return d.d.Retry(ctx, max(opts.Delay, 0), attempts)
}
