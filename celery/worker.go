package celery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Outcomes a Worker reports, matched with errors.Is.
var (
	// ErrUnknownTask: no handler is registered for the task's name. The
	// message goes to the dead-letter topic, where a Celery worker would
	// discard it, so that it is not lost.
	ErrUnknownTask = errors.New("celery: unknown task")
	// ErrExpired: the task's expires time passed before it ran; the
	// message is discarded, as Celery does.
	ErrExpired = errors.New("celery: task expired")
)

// HandlerFunc runs one task. Returning nil acknowledges it. An error
// retries it as Celery's retry does (wrap it with bus.RetryAfter to choose
// the countdown); wrap it with bus.NoRetry to dead-letter the message at
// once, or with bus.Drop to discard it.
type HandlerFunc func(ctx context.Context, r Request) error

// Option configures a Worker.
type Option func(*config)

type config struct {
	concurrency int
	maxRetries  int
	backoff     bus.Backoff
	logger      *slog.Logger
	subscribe   bus.SubscribeOptions
}

// Concurrency sets how many tasks run at once. Default 1.
func Concurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// MaxRetries sets how many times a failed task is retried before it is
// dead-lettered. Default 3, Celery's max_retries; negative means never
// retry.
func MaxRetries(n int) Option { return func(c *config) { c.maxRetries = n } }

// RetryBackoff chooses the countdown of the nth retry (n from 1). Default
// three minutes, Celery's default_retry_delay.
func RetryBackoff(b bus.Backoff) Option { return func(c *config) { c.backoff = b } }

// Logger receives the worker's log. Default slog.Default().
func Logger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Subscribe sets the subscription's options (group, prefetch, dead-letter
// topic). Default: the zero value, with Prefetch equal to Concurrency.
func Subscribe(o bus.SubscribeOptions) Option { return func(c *config) { c.subscribe = o } }

// Worker runs Celery tasks from one queue with Go handlers.
type Worker struct {
	b        bus.Broker
	queue    string
	cfg      config
	consumer *bus.Consumer

	mu       sync.RWMutex
	handlers map[string]HandlerFunc
}

// NewWorker returns a worker for the tasks of queue on b; register
// handlers with Handle, then call Run. b publishes retries, so it must
// reach the same broker it consumes from.
func NewWorker(b bus.Broker, queue string, opts ...Option) (*Worker, error) {
	cfg := config{concurrency: 1, maxRetries: 3, backoff: func(int) time.Duration { return 3 * time.Minute }}
	for _, o := range opts {
		o(&cfg)
	}
	var problems []error
	if b == nil {
		problems = append(problems, errors.New("broker is nil"))
	}
	if cfg.backoff == nil {
		problems = append(problems, errors.New("RetryBackoff is nil"))
	}
	if cfg.concurrency < 1 {
		problems = append(problems, fmt.Errorf("Concurrency %d is below 1", cfg.concurrency))
	}
	if len(problems) > 0 {
		return nil, &bus.ConfigError{Problems: problems}
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	w := &Worker{b: b, queue: queue, cfg: cfg, handlers: map[string]HandlerFunc{}}
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:       queue,
		Subscribe:   cfg.subscribe,
		Concurrency: cfg.concurrency,
		Logger:      cfg.logger,
	}, w.handle)
	if err != nil {
		return nil, err
	}
	w.consumer = c
	return w, nil
}

// Handle registers fn for the task named name (Celery's registered name,
// such as "tasks.send_sms_code"). It may be called while the worker runs.
func (w *Worker) Handle(name string, fn HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[name] = fn
}

// Run consumes the queue until ctx is done or Shutdown is called, then
// waits for running tasks as bus.Consumer.Run does.
func (w *Worker) Run(ctx context.Context) error { return w.consumer.Run(ctx) }

// Shutdown stops intake and waits until Run has returned or ctx is done.
func (w *Worker) Shutdown(ctx context.Context) error { return w.consumer.Shutdown(ctx) }

func (w *Worker) handle(ctx context.Context, m *bus.Message) error {
	r, err := Decode(m)
	if err != nil {
		return bus.NoRetry(err)
	}
	w.mu.RLock()
	fn := w.handlers[r.Task]
	w.mu.RUnlock()
	if fn == nil {
		return bus.NoRetry(fmt.Errorf("%w: %s (id %s)", ErrUnknownTask, r.Task, r.ID))
	}
	now := time.Now()
	if !r.Expires.IsZero() && now.After(r.Expires) {
		w.cfg.logger.Info("celery: task expired; discarding it", "task", r.Task, "id", r.ID, "expires", r.Expires)
		return bus.Drop(fmt.Errorf("%w: %s (id %s)", ErrExpired, r.Task, r.ID))
	}
	if !r.ETA.IsZero() && r.ETA.After(now) {
		return bus.Postpone(r.ETA.Sub(now))
	}
	err = run(ctx, fn, r)
	if err == nil || errors.Is(err, bus.ErrDrop) || errors.Is(err, bus.ErrNoRetry) {
		return err
	}
	if w.cfg.maxRetries >= 0 && r.Retries >= w.cfg.maxRetries {
		return bus.NoRetry(fmt.Errorf("celery: %s (id %s) failed after %d retries: %w", r.Task, r.ID, r.Retries, err))
	}
	delay, ok := bus.RetryDelay(err)
	if !ok {
		delay = w.cfg.backoff(r.Retries + 1)
	}
	// The retry is published before this delivery is acknowledged, so a
	// crash in between runs the task twice rather than never.
	if perr := w.b.Publish(ctx, w.queue, withRetry(m, r.Retries+1, now.Add(delay))); perr != nil {
		return fmt.Errorf("%w (sending the retry failed: %v)", err, perr)
	}
	w.cfg.logger.Info("celery: task failed; retrying", "task", r.Task, "id", r.ID,
		"retries", r.Retries+1, "countdown", delay, "error", err)
	return nil
}

// run calls fn, turning a panic into an error so that it is retried like
// any failure.
func run(ctx context.Context, fn HandlerFunc, r Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &bus.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, r)
}
