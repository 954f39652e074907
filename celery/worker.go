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
	"github.com/omnibus-mq/omnibus/task"
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

// ResultFunc is a HandlerFunc that returns a value: with a ResultStore
// (the Results option) it is recorded for Celery clients, unless the
// request asks to ignore results. The value must encode as JSON.
type ResultFunc func(ctx context.Context, r Request) (any, error)

// Option configures a Worker.
type Option func(*config)

type config struct {
	concurrency int
	maxRetries  int
	backoff     bus.Backoff
	logger      *slog.Logger
	subscribe   bus.SubscribeOptions
	results     ResultStore
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

// Results records each task's outcome in store: SUCCESS with the value of
// a ResultFunc, RETRY and FAILURE with the error as an exception (see
// Exception), REVOKED for an expired task. A result that cannot be stored
// is logged; the task is not run again for it. Default: none kept.
func Results(store ResultStore) Option { return func(c *config) { c.results = store } }

// Worker runs Celery tasks from one queue with Go handlers.
type Worker struct {
	b        bus.Broker
	queue    string
	cfg      config
	consumer *bus.Consumer

	mu       sync.RWMutex
	handlers map[string]ResultFunc
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
	w := &Worker{b: b, queue: queue, cfg: cfg, handlers: map[string]ResultFunc{}}
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
// A name has one handler: a second registration fails with
// task.ErrDuplicateTask.
func (w *Worker) Handle(name string, fn HandlerFunc) error {
	if fn == nil {
		return &bus.ConfigError{Problems: []error{fmt.Errorf("celery: nil handler for %q", name)}}
	}
	return w.HandleResult(name, func(ctx context.Context, r Request) (any, error) { return nil, fn(ctx, r) })
}

// HandleResult registers fn, whose return value is the task's result, for
// the task named name. It fails as Handle does.
func (w *Worker) HandleResult(name string, fn ResultFunc) error {
	if fn == nil {
		return &bus.ConfigError{Problems: []error{fmt.Errorf("celery: nil handler for %q", name)}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.handlers[name]; dup {
		return fmt.Errorf("%w: %q", task.ErrDuplicateTask, name)
	}
	w.handlers[name] = fn
	return nil
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
		err := fmt.Errorf("%w: %s (id %s)", ErrExpired, r.Task, r.ID)
		w.store(ctx, r, StateRevoked, map[string]any{
			"exc_type": "TaskRevokedError", "exc_message": []any{"expired"}, "exc_module": "celery.exceptions"}, err)
		return bus.Drop(err)
	}
	if !r.ETA.IsZero() && r.ETA.After(now) {
		return bus.Postpone(r.ETA.Sub(now))
	}
	value, err := run(ctx, fn, r)
	switch {
	case err == nil:
		w.store(ctx, r, StateSuccess, value, nil)
		return nil
	case errors.Is(err, bus.ErrDrop):
		return err
	case errors.Is(err, bus.ErrNoRetry):
		w.store(ctx, r, StateFailure, exceptionValue(err), err)
		return err
	}
	if w.cfg.maxRetries >= 0 && r.Retries >= w.cfg.maxRetries {
		err = fmt.Errorf("celery: %s (id %s) failed after %d retries: %w", r.Task, r.ID, r.Retries, err)
		w.store(ctx, r, StateFailure, exceptionValue(err), err)
		return bus.NoRetry(err)
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
	w.store(ctx, r, StateRetry, exceptionValue(err), err)
	return nil
}

// store records a result when the worker keeps them and the request
// wants them; err, when not nil, gives the traceback text.
func (w *Worker) store(ctx context.Context, r Request, status task.Status, value any, err error) {
	if w.cfg.results == nil || r.IgnoreResult {
		return
	}
	res := Result{TaskID: r.ID, Status: status, Value: value, ParentID: r.ParentID, GroupID: r.Group}
	if status != StateRetry {
		res.DoneAt = time.Now()
	}
	var pe *bus.PanicError
	switch {
	case errors.As(err, &pe):
		res.Traceback = string(pe.Stack)
	case err != nil:
		res.Traceback = err.Error()
	}
	if serr := w.cfg.results.StoreResult(ctx, res); serr != nil {
		w.cfg.logger.Error("celery: storing a task's result failed", "task", r.Task, "id", r.ID, "status", status, "error", serr)
	}
}

// run calls fn, turning a panic into an error so that it is retried like
// any failure.
func run(ctx context.Context, fn ResultFunc, r Request) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &bus.PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, r)
}
