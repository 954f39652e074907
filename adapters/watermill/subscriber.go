package watermill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// ErrNacked is the NackOptions.Reason of a delivery that watermill code
// nacked; it is what a dead-lettered message's bus.HeaderError says.
var ErrNacked = errors.New("watermill: message nacked")

// SubscriberConfig configures a Subscriber. The zero value is valid.
type SubscriberConfig struct {
	// Group is the consumer group of every subscription. Default
	// bus.DefaultGroup.
	Group string
	// Prefetch is how many messages a subscription hands out before one of
	// them is acked or nacked. Watermill code expects the next message only
	// after the previous one is settled, so values above 1 are for
	// handlers that know messages arrive concurrently and out of order.
	// Default 1.
	Prefetch int
	// MaxAttempts is how many deliveries of a message may end in a Nack
	// before the broker moves it to DeadLetterTopic. Default 0: no limit,
	// since watermill's contract is that a nacked message comes back;
	// watermill leaves poison messages to router middleware.
	MaxAttempts int
	// DeadLetterTopic receives messages that used up MaxAttempts.
	// Default "<topic>.dlq".
	DeadLetterTopic string
	// NackDelay is how long a nacked message waits before it is delivered
	// again, where the broker supports delays. Default 0: at once.
	NackDelay time.Duration
	// Logger receives failures to receive or settle, which the broker
	// recovers from by redelivering. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem of the configuration at once.
func (c SubscriberConfig) Validate() error {
	var problems []error
	if c.Prefetch < 0 {
		problems = append(problems, fmt.Errorf("negative Prefetch %d", c.Prefetch))
	}
	if c.MaxAttempts < 0 {
		problems = append(problems, fmt.Errorf("negative MaxAttempts %d (0 means no limit)", c.MaxAttempts))
	}
	if c.NackDelay < 0 {
		problems = append(problems, fmt.Errorf("negative NackDelay %v", c.NackDelay))
	}
	if len(problems) > 0 {
		return &bus.ConfigError{Problems: problems}
	}
	return nil
}

// Subscriber hands an omnibus bus.Subscriber to watermill code as a
// watermill message.Subscriber.
//
// Each Subscribe opens one bus subscription and hands its deliveries out
// on a channel; a message's Ack acks the delivery and its Nack nacks it,
// so the broker redelivers it. A message that is neither acked nor nacked
// when its subscription ends goes back to the broker. A message's context
// carries the values of the context given to Subscribe, and is cancelled
// once the message is acked or nacked, or its subscription ends.
type Subscriber struct {
	sub bus.Subscriber
	cfg SubscriberConfig

	mu        sync.Mutex
	closed    bool
	closing   chan struct{}
	closeOnce sync.Once
	running   sync.WaitGroup
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber validates cfg and returns a Subscriber that consumes
// through sub. It does not take ownership of sub: Close closes the
// subscriptions this Subscriber opened and leaves sub open.
func NewSubscriber(sub bus.Subscriber, cfg SubscriberConfig) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, &bus.ConfigError{Problems: []error{errors.New("subscriber is nil")}}
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Subscriber{sub: sub, cfg: cfg, closing: make(chan struct{})}, nil
}

func (s *Subscriber) options(topic string) bus.SubscribeOptions {
	o := bus.SubscribeOptions{
		Group:           s.cfg.Group,
		Prefetch:        s.cfg.Prefetch,
		MaxAttempts:     s.cfg.MaxAttempts,
		DeadLetterTopic: s.cfg.DeadLetterTopic,
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = -1
	}
	return driver.Defaults(topic, o)
}

// SubscribeInitialize creates the consumer group on topic, so that
// messages published from now on wait for it even before the first
// Subscribe.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.isClosed() {
		return bus.ErrClosed
	}
	sub, err := s.sub.Subscribe(context.Background(), topic, s.options(topic))
	if err != nil {
		return err
	}
	return sub.Close()
}

func (s *Subscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Subscribe opens a subscription to topic. The returned channel is closed
// when ctx is done, when Close is called, or when the bus subscription
// ends (for example because the bus subscriber was closed).
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, bus.ErrClosed
	}
	// Counted before Close can start waiting, so Close waits for it.
	s.running.Add(1)
	s.mu.Unlock()

	sub, err := s.sub.Subscribe(ctx, topic, s.options(topic))
	if err != nil {
		s.running.Done()
		return nil, err
	}
	out := make(chan *message.Message)
	go s.run(ctx, topic, sub, out)
	return out, nil
}

// run owns one subscription: Prefetch pumps hand out its deliveries until
// ctx is done, the Subscriber closes or the subscription ends; then the
// subscription is closed, which gives back whatever was not settled, and
// out is closed last, so that a closed channel means nothing of it is
// still in flight.
func (s *Subscriber) run(ctx context.Context, topic string, sub bus.Subscription, out chan<- *message.Message) {
	defer s.running.Done()
	defer close(out)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	var pumps sync.WaitGroup
	for range s.cfg.Prefetch {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			s.pump(runCtx, topic, sub, out)
		}()
	}
	ended := make(chan struct{})
	go func() { pumps.Wait(); close(ended) }()

	select {
	case <-runCtx.Done():
	case <-s.closing:
	case <-ended:
	}
	stop()
	<-ended
	if err := sub.Close(); err != nil && !errors.Is(err, bus.ErrClosed) {
		s.cfg.Logger.Warn("omnibus: closing a subscription failed", "topic", topic, "error", err)
	}
}

// settled waits for watermill code to ack or nack wm, or for ctx to end.
// An Ack or Nack given before ctx ended counts even when both are ready
// at once: a message acked as the subscription closes is not delivered
// again.
func settled(ctx context.Context, wm *message.Message) (acked, nacked bool) {
	select {
	case <-wm.Acked():
		return true, false
	case <-wm.Nacked():
		return false, true
	case <-ctx.Done():
	}
	select {
	case <-wm.Acked():
		return true, false
	case <-wm.Nacked():
		return false, true
	default:
		return false, false
	}
}

// settleTimeout bounds an Ack or Nack, which should go through even while
// the subscription ends.
const settleTimeout = 30 * time.Second

// pump hands out one delivery at a time and settles it as watermill code
// decides.
func (s *Subscriber) pump(ctx context.Context, topic string, sub bus.Subscription, out chan<- *message.Message) {
	pause := 50 * time.Millisecond
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, bus.ErrClosed) {
				return
			}
			s.cfg.Logger.Warn("omnibus: receive failed; retrying", "topic", topic, "error", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			pause = min(pause*2, 5*time.Second)
			continue
		}
		pause = 50 * time.Millisecond

		wm := deliveryToWatermill(d.Message())
		msgCtx, cancelMsg := context.WithCancel(ctx)
		wm.SetContext(msgCtx)
		select {
		case out <- wm:
		case <-ctx.Done():
			// Never handed out: closing the subscription gives it back.
			cancelMsg()
			return
		}

		acked, nacked := settled(ctx, wm)
		cancelMsg()
		if !acked && !nacked {
			return
		}
		var serr error
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		if acked {
			serr = d.Ack(sctx)
		} else {
			serr = d.Nack(sctx, bus.NackOptions{Delay: s.cfg.NackDelay, Reason: ErrNacked})
		}
		cancel()
		switch {
		case serr == nil:
		case nacked && errors.Is(serr, bus.ErrClosed):
			// The subscription ended first and gave the message back,
			// which is what the Nack asked for.
		default:
			// The broker redelivers what it did not see settled.
			s.cfg.Logger.Warn("omnibus: settling a delivery failed", "topic", topic, "id", wm.UUID, "error", serr)
		}
	}
}

// Close ends every subscription of this Subscriber, closing their
// channels, and returns once they are closed; unsettled messages go back
// to the broker. Subscribe fails with bus.ErrClosed afterwards. Close is
// idempotent.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
	})
	s.running.Wait()
	return nil
}
