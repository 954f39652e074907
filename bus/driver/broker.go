package driver

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/omnibus-mq/omnibus/bus"
)

// Options configure the portable side of a Broker. The zero value is
// valid.
type Options struct {
	// Logger receives the failures the portable side retries (a
	// subscription's Receive) and settlements it gives up on.
	// Default slog.Default().
	Logger *slog.Logger
	// Name is the adapter's name in log lines ("rabbitmq", "kafka").
	// Default "omnibus".
	Name string
}

// Broker is the portable bus.Broker over a Driver. It owns the rules every
// backend shares, so that they hold alike on each: ErrClosed after Close,
// the checks of topic names, contexts and messages (bus.ErrInvalidMessage,
// bus.SizeError) before anything is sent, the defaults of
// bus.SubscribeOptions, the prefetch window, settling exactly once, the
// attempts and the dead-letter decision with its headers, and giving back
// what a closed subscription held.
//
// Adapters embed a *Broker in the type their constructor returns, so that
// it has Publish, Subscribe, Features, Shutdown and Close.
type Broker struct {
	drv  Driver
	log  *slog.Logger
	name string

	mu       sync.Mutex
	closed   bool
	inFlight int           // Publish and Subscribe calls under way
	idle     chan struct{} // closed when closed and inFlight reaches 0
	subs     map[*subscription]struct{}
	// collected is set once Shutdown has taken the subscriptions to close.
	collected bool

	closeOnce sync.Once
	closeErr  error
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ bus.Shutdowner      = (*Broker)(nil)
)

// New returns the portable Broker over d, which it owns: its Shutdown and
// Close close d.
func New(d Driver, opts Options) *Broker {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = "omnibus"
	}
	return &Broker{drv: d, log: opts.Logger, name: opts.Name, idle: make(chan struct{}), subs: map[*subscription]struct{}{}}
}

// enter counts a call in flight, or reports that the Broker is closed.
func (b *Broker) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.inFlight++
	return true
}

func (b *Broker) leave() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inFlight--
	if b.closed && b.inFlight == 0 {
		close(b.idle)
	}
}

// Features describes what the backend guarantees.
func (b *Broker) Features() bus.Features { return b.drv.Features() }

// Publish validates msgs, fills in their IDs and publish times, and sends
// them as one batch. See bus.Publisher.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if !b.enter() {
		return bus.ErrClosed
	}
	defer b.leave()
	if err := checkCall(ctx, topic); err != nil {
		return err
	}
	if err := Prepare(msgs, b.drv.Features().MaxMessageSize); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	return b.drv.Send(ctx, topic, msgs)
}

// Subscribe joins opts.Group on topic. See bus.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if !b.enter() {
		return nil, bus.ErrClosed
	}
	defer b.leave()
	if err := checkCall(ctx, topic); err != nil {
		return nil, err
	}
	if err := checkSubscribe(topic, opts); err != nil {
		return nil, err
	}
	opts = Defaults(topic, opts)
	ds, err := b.drv.Subscribe(ctx, topic, opts)
	if err != nil {
		return nil, err
	}
	s := newSubscription(b, ds, topic, opts)
	b.mu.Lock()
	if b.collected {
		// A Shutdown that stopped waiting for this call has closed the
		// subscriptions it found already.
		b.mu.Unlock()
		ds.Close(context.WithoutCancel(ctx), nil, nil)
		return nil, bus.ErrClosed
	}
	// A Shutdown under way closes it with the others.
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	s.start()
	return s, nil
}

func (b *Broker) forget(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
}

// Shutdown refuses new calls with bus.ErrClosed, waits for the Publish and
// Subscribe calls under way, closes every subscription (settlements under
// way finish; what the subscriptions hold goes back to the broker), and
// then closes the connection. When ctx ends first, the rest is cut short:
// the connection is closed at once, and Shutdown returns ctx's error with
// any other. Shutdown and Close are idempotent: later calls return the
// first one's result.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		if b.inFlight == 0 {
			close(b.idle)
		}
		b.mu.Unlock()
		var errs []error
		select {
		case <-b.idle:
		default:
			select {
			case <-b.idle:
			case <-ctx.Done():
				errs = append(errs, ctx.Err())
			}
		}
		b.mu.Lock()
		b.collected = true
		subs := make([]*subscription, 0, len(b.subs))
		for s := range b.subs {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for _, s := range subs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.close(ctx); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := b.drv.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		b.closeErr = dedupe(errs)
	})
	return b.closeErr
}

// Close is Shutdown without a deadline: each step is bounded by the
// adapter's own timeouts. See bus.Publisher.
func (b *Broker) Close() error { return b.Shutdown(context.Background()) }

// dedupe joins errs, keeping one of several that are the same context
// error.
func dedupe(errs []error) error {
	var out []error
	seen := map[error]bool{}
	for _, err := range errs {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			if seen[err] {
				continue
			}
			seen[err] = true
		}
		out = append(out, err)
	}
	return errors.Join(out...)
}
