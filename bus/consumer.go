package bus

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"
)

// ConsumerConfig configures a Consumer. Only Topic is required.
type ConsumerConfig struct {
	// Topic to consume.
	Topic string
	// Subscribe holds the group, prefetch, attempts and dead-letter topic.
	// Subscribe.Prefetch defaults to Concurrency.
	Subscribe SubscribeOptions
	// Concurrency is how many handlers run at once. Default 1.
	Concurrency int
	// OrderedByKey runs messages with the same key one at a time, in the
	// order received, while messages of other keys run concurrently.
	OrderedByKey bool
	// Backoff chooses the delay before a failed message is retried.
	// Default ExponentialBackoff(time.Second, time.Minute).
	Backoff Backoff
	// HandlerTimeout bounds each handler call through its context.
	// Default 0: no limit.
	HandlerTimeout time.Duration
	// ShutdownTimeout is how long a shutdown waits for running handlers
	// before cancelling their contexts and giving their messages back to
	// the broker. Default 30s.
	ShutdownTimeout time.Duration
	// Middleware wraps the handler; the first element is the outermost.
	Middleware []Middleware
	// Logger receives settlement failures and retries. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem of the configuration at once.
func (c ConsumerConfig) Validate() error {
	var p configProblems
	if c.Topic == "" {
		p.addf("Topic is empty")
	}
	if c.Concurrency < 0 {
		p.addf("Concurrency %d is negative", c.Concurrency)
	}
	if c.Subscribe.Prefetch < 0 {
		p.addf("Subscribe.Prefetch %d is negative", c.Subscribe.Prefetch)
	}
	if c.HandlerTimeout < 0 {
		p.addf("HandlerTimeout %v is negative", c.HandlerTimeout)
	}
	if c.ShutdownTimeout < 0 {
		p.addf("ShutdownTimeout %v is negative", c.ShutdownTimeout)
	}
	return p.err()
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Subscribe.Prefetch == 0 {
		c.Subscribe.Prefetch = c.Concurrency
	}
	if c.Subscribe.Group == "" {
		// The subscriber applies the same default; set here for the logs.
		c.Subscribe.Group = DefaultGroup
	}
	if c.Backoff == nil {
		c.Backoff = ExponentialBackoff(time.Second, time.Minute)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Consumer runs a Handler over a topic's messages with bounded concurrency,
// acknowledging successes and retrying failures with backoff until they are
// dead-lettered.
type Consumer struct {
	sub     Subscriber
	cfg     ConsumerConfig
	handler Handler

	stopOnce sync.Once
	stop     chan struct{} // closed to stop intake
	done     chan struct{} // closed when Run returns
	ready    chan struct{} // closed once subscribed
	runOnce  sync.Once
}

// NewConsumer validates cfg and returns a Consumer that runs h over
// cfg.Topic once Run is called.
func NewConsumer(sub Subscriber, cfg ConsumerConfig, h Handler) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sub == nil || h == nil {
		return nil, &ConfigError{Problems: []error{errors.New("subscriber and handler must not be nil")}}
	}
	cfg = cfg.withDefaults()
	for i := len(cfg.Middleware) - 1; i >= 0; i-- {
		h = cfg.Middleware[i](h)
	}
	return &Consumer{sub: sub, cfg: cfg, handler: h, stop: make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{})}, nil
}

// Run subscribes and processes messages until ctx is done or Shutdown is
// called; then it stops intake, waits up to ShutdownTimeout for running
// handlers, and closes the subscription, which gives unfinished messages
// back to the broker. It returns nil after such a shutdown, or the error
// that ended the subscription. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	err := errors.New("bus: Consumer.Run called twice")
	c.runOnce.Do(func() {
		defer close(c.done)
		err = c.run(ctx)
	})
	return err
}

// Ready is closed once Run has subscribed, so that the consumer receives
// what is published from then on: a readiness check, or a start-up step
// that must not race the subscription. It stays open when Run ends before
// subscribing; Done tells that case.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

// Done is closed when Run has returned.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Shutdown stops intake and waits until Run has returned or ctx is done.
func (c *Consumer) Shutdown(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stop) })
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Consumer) run(ctx context.Context) error {
	sub, err := c.sub.Subscribe(ctx, c.cfg.Topic, c.cfg.Subscribe)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Shut down before the subscription was made: nothing ran.
			return nil
		}
		return err
	}
	close(c.ready)
	// intake ends on ctx or Shutdown; handlers keep their own context,
	// cancelled only when the shutdown timeout gives up on them.
	intake, stopIntake := context.WithCancel(ctx)
	defer stopIntake()
	go func() {
		select {
		case <-c.stop:
			stopIntake()
		case <-intake.Done():
		}
	}()
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { runErr = err })
		stopIntake()
	}

	if c.cfg.OrderedByKey {
		lanes := make([]chan Delivery, c.cfg.Concurrency)
		for i := range lanes {
			lanes[i] = make(chan Delivery, c.cfg.Subscribe.Prefetch)
			wg.Add(1)
			go func(lane <-chan Delivery) {
				defer wg.Done()
				for d := range lane {
					if intake.Err() != nil {
						// Not started: Close gives it back to the broker.
						continue
					}
					c.process(work, d)
				}
			}(lanes[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				for _, l := range lanes {
					close(l)
				}
			}()
			seed := maphash.MakeSeed()
			for {
				d, err := c.receive(intake, sub)
				if err != nil {
					if err != errStopped {
						fail(err)
					}
					return
				}
				lane := lanes[maphash.String(seed, d.Message().Key)%uint64(len(lanes))]
				select {
				case lane <- d:
				case <-intake.Done():
					// Not started: leave it unsettled for Close to give back.
					return
				}
			}
		}()
	} else {
		for range c.cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					d, err := c.receive(intake, sub)
					if err != nil {
						if err != errStopped {
							fail(err)
						}
						return
					}
					c.process(work, d)
				}
			}()
		}
	}

	<-intake.Done()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	timer := time.NewTimer(c.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		c.cfg.Logger.Warn("omnibus: shutdown timeout passed; cancelling running handlers",
			"topic", c.cfg.Topic, "group", c.cfg.Subscribe.Group, "timeout", c.cfg.ShutdownTimeout)
		cancelWork()
		grace := time.NewTimer(min(c.cfg.ShutdownTimeout, 5*time.Second))
		defer grace.Stop()
		select {
		case <-finished:
		case <-grace.C:
			// A handler that ignores its context cannot be stopped; its
			// message goes back to the broker with the subscription.
			c.cfg.Logger.Error("omnibus: handlers ignored cancellation; abandoning them",
				"topic", c.cfg.Topic, "group", c.cfg.Subscribe.Group)
		}
	}
	if cerr := sub.Close(); cerr != nil && runErr == nil && !errors.Is(cerr, ErrClosed) {
		runErr = cerr
	}
	return runErr
}

var errStopped = errors.New("stopped")

// receive returns the next delivery, errStopped once intake has ended, or
// the error that ended the subscription. Transient errors are logged and
// retried with a short backoff.
func (c *Consumer) receive(intake context.Context, sub Subscription) (Delivery, error) {
	pause := 50 * time.Millisecond
	for {
		if intake.Err() != nil {
			return nil, errStopped
		}
		d, err := sub.Receive(intake)
		if intake.Err() != nil {
			// A delivery that raced with the stop stays unsettled; closing
			// the subscription gives it back.
			return nil, errStopped
		}
		if err == nil {
			return d, nil
		}
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		c.cfg.Logger.Warn("omnibus: receive failed; retrying", "topic", c.cfg.Topic, "error", err, "pause", pause)
		select {
		case <-time.After(pause):
		case <-intake.Done():
			return nil, errStopped
		}
		pause = min(pause*2, 5*time.Second)
	}
}

// settleTimeout bounds an Ack or Nack, which must go through even while
// the consumer shuts down.
const settleTimeout = 30 * time.Second

func (c *Consumer) process(work context.Context, d Delivery) {
	m := d.Message()
	ctx := work
	if c.cfg.HandlerTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(work, c.cfg.HandlerTimeout)
		defer cancel()
	}
	err := call(ctx, c.handler, m)

	sctx, cancel := context.WithTimeout(context.WithoutCancel(work), settleTimeout)
	defer cancel()
	var serr error
	switch {
	case err == nil:
		serr = d.Ack(sctx)
	case errors.Is(err, ErrDrop):
		c.cfg.Logger.Info("omnibus: message dropped", "topic", c.cfg.Topic, "id", m.ID, "error", err)
		serr = d.Ack(sctx)
	case errors.Is(err, errPostpone):
		var o *outcome
		errors.As(err, &o)
		serr = d.Nack(sctx, NackOptions{Delay: o.wait, Postpone: true})
	case errors.Is(err, ErrNoRetry):
		serr = d.Nack(sctx, NackOptions{Reason: err, DeadLetter: true})
	default:
		delay, ok := RetryDelay(err)
		if !ok {
			delay = c.cfg.Backoff(m.Attempt)
		}
		c.cfg.Logger.Debug("omnibus: handler failed", "topic", c.cfg.Topic, "id", m.ID,
			"attempt", m.Attempt, "error", err, "retry_in", delay)
		serr = d.Nack(sctx, NackOptions{Reason: err, Delay: delay})
	}
	if serr != nil {
		// The broker will redeliver what it did not see settled.
		c.cfg.Logger.Warn("omnibus: settling a delivery failed", "topic", c.cfg.Topic, "id", m.ID, "error", serr)
	}
}
