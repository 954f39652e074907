package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// WorkerConfig configures a Worker. The zero value is valid.
type WorkerConfig struct {
	// Queues to consume. Default: the queues of the registered tasks.
	Queues []string
	// Group the worker consumes as; workers of one group share the tasks.
	// Default bus.DefaultGroup.
	Group string
	// Concurrency is how many tasks run at once, per queue (Celery's -c).
	// Default runtime.GOMAXPROCS(0).
	Concurrency int
	// Prefetch is how many tasks a queue's subscription holds beyond the
	// ones running. Default 0: a worker takes a task only when a slot is
	// free, so a long task never holds short ones hostage.
	Prefetch int
	// ShutdownTimeout bounds the wait for running tasks when the worker
	// stops; the ones still running are cancelled and go back to the
	// broker. Default 30s.
	ShutdownTimeout time.Duration
	// Results records task states; nil records nothing.
	Results Store
	// ResultTTL is how long states are kept. Default 24h.
	ResultTTL time.Duration
	// Observers are told of every run's outcome (see Metrics).
	Observers []func(Event)
	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
}

// Event describes one run of a task, for observers.
type Event struct {
	Info
	Status   Status // Started, then Success, Retry or Failure
	Err      error
	Duration time.Duration // of the run, for final events
}

// Info describes the task a handler is running; InfoFrom returns it.
type Info struct {
	ID      string
	Name    string
	Queue   string
	Attempt int // 1 on the first run
}

type infoKey struct{}

// InfoFrom returns the Info of the task running in ctx.
func InfoFrom(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(infoKey{}).(Info)
	return i, ok
}

// Validate reports every problem of the configuration at once, as a
// *bus.ConfigError.
func (c WorkerConfig) Validate() error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	for i, q := range c.Queues {
		if q == "" {
			add("Queues[%d] is empty", i)
		}
	}
	if c.Concurrency < 0 {
		add("Concurrency %d is negative", c.Concurrency)
	}
	if c.Prefetch < 0 {
		add("Prefetch %d is negative", c.Prefetch)
	}
	if c.ShutdownTimeout < 0 {
		add("ShutdownTimeout %v is negative", c.ShutdownTimeout)
	}
	if c.ResultTTL < 0 {
		add("ResultTTL %v is negative", c.ResultTTL)
	}
	for i, o := range c.Observers {
		if o == nil {
			add("Observers[%d] is nil", i)
		}
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// ErrDuplicateTask is returned by Handle for a task name the worker has a
// handler for already.
var ErrDuplicateTask = errors.New("task: a handler is registered for this task already")

// ErrRunning is returned by Handle once the worker runs, and by a second
// Run.
var ErrRunning = errors.New("task: the worker runs already")

// Worker runs registered tasks from their queues.
type Worker struct {
	b   bus.Broker
	cfg WorkerConfig

	mu    sync.Mutex
	tasks map[string]*registration
	runs  bool

	stopOnce sync.Once
	stop     chan struct{} // closed by Shutdown
	done     chan struct{} // closed when Run returns
}

type registration struct {
	name    string
	cfg     config
	limiter *limiter
	run     func(ctx context.Context, body []byte) (json.RawMessage, error)
}

// NewWorker validates cfg and returns a worker that consumes from b once
// Run is called. Errors match bus.ErrBadConfig.
func NewWorker(b bus.Broker, cfg WorkerConfig) (*Worker, error) {
	err := cfg.Validate()
	if b == nil {
		var p []error
		if ce, ok := err.(*bus.ConfigError); ok {
			p = ce.Problems
		}
		err = &bus.ConfigError{Problems: append(p, errors.New("the broker is nil"))}
	}
	if err != nil {
		return nil, err
	}
	if cfg.Group == "" {
		cfg.Group = bus.DefaultGroup
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = runtime.GOMAXPROCS(0)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{b: b, cfg: cfg, tasks: map[string]*registration{}, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Handle registers fn as the handler of t. A nil error is success; an
// error retries the task with its backoff until its retries run out, then
// dead-letters it; bus.NoRetry(err) dead-letters at once, and
// bus.RetryAfter(err, d) retries after d (a gateway's Retry-After, say).
//
// A task has one handler per worker: registering a second one fails with
// ErrDuplicateTask, and registering once the worker runs with ErrRunning.
func Handle[A any](w *Worker, t *Task[A], fn func(ctx context.Context, args A) error) error {
	return HandleResult(w, t, func(ctx context.Context, args A) (struct{}, error) { return struct{}{}, fn(ctx, args) })
}

// HandleResult registers fn, whose result is stored as the task's result
// (JSON) in the worker's result store. It fails as Handle does.
func HandleResult[A, R any](w *Worker, t *Task[A], fn func(ctx context.Context, args A) (R, error)) error {
	if t == nil || fn == nil {
		return &bus.ConfigError{Problems: []error{errors.New("task: Handle of a nil task or handler")}}
	}
	reg := &registration{name: t.name, cfg: t.cfg}
	if t.cfg.rate > 0 {
		reg.limiter = newLimiter(t.cfg.rate, t.cfg.burst)
	}
	_, unit := any(*new(R)).(struct{})
	reg.run = func(ctx context.Context, body []byte) (json.RawMessage, error) {
		var args A
		if err := json.Unmarshal(body, &args); err != nil {
			return nil, bus.NoRetry(fmt.Errorf("%w: %v", ErrBadPayload, err))
		}
		res, err := protect(ctx, args, fn)
		if err != nil || unit {
			return nil, err
		}
		out, merr := json.Marshal(res)
		if merr != nil {
			return nil, bus.NoRetry(fmt.Errorf("task %s: encode result: %w", t.name, merr))
		}
		return out, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.runs {
		return fmt.Errorf("%w: Handle(%q) after Run", ErrRunning, t.name)
	}
	if _, dup := w.tasks[t.name]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateTask, t.name)
	}
	w.tasks[t.name] = reg
	return nil
}

// Run consumes the worker's queues until ctx is done or Shutdown is
// called, then shuts down gracefully: intake stops, running tasks get
// ShutdownTimeout to finish, and the rest stay with the broker. Wire ctx
// to SIGINT and SIGTERM with signal.NotifyContext. Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.runs {
		w.mu.Unlock()
		return ErrRunning
	}
	w.runs = true
	defer close(w.done)
	queues := slices.Clone(w.cfg.Queues)
	if len(queues) == 0 {
		for _, r := range w.tasks {
			if !slices.Contains(queues, r.cfg.queue) {
				queues = append(queues, r.cfg.queue)
			}
		}
	}
	w.mu.Unlock()
	if len(queues) == 0 {
		return &bus.ConfigError{Problems: []error{errors.New("task: worker has no queue: register a task or set Queues")}}
	}
	slices.Sort(queues)

	errs := make(chan error, len(queues))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	for _, q := range queues {
		c, err := bus.NewConsumer(w.b, bus.ConsumerConfig{
			Topic: q,
			Subscribe: bus.SubscribeOptions{
				Group:    w.cfg.Group,
				Prefetch: w.cfg.Concurrency + w.cfg.Prefetch,
				// Each task decides its own retries; the consumer only
				// carries out the decision.
				MaxAttempts: -1,
			},
			Concurrency:     w.cfg.Concurrency,
			ShutdownTimeout: w.cfg.ShutdownTimeout,
			Logger:          w.cfg.Logger,
		}, func(ctx context.Context, m *bus.Message) error { return w.handle(ctx, q, m) })
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil {
				errs <- fmt.Errorf("task: queue %s: %w", q, err)
				cancel()
			}
		}()
	}
	w.cfg.Logger.Info("task: worker started", "queues", queues, "group", w.cfg.Group, "concurrency", w.cfg.Concurrency)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// Shutdown stops intake and waits until Run has returned (running tasks
// get ShutdownTimeout to finish) or ctx is done. A worker that never ran
// returns at once.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stop) })
	w.mu.Lock()
	runs := w.runs
	w.mu.Unlock()
	if !runs {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// protect runs fn, turning a panic into a *bus.PanicError so that the
// task's state and retries follow as for any failure.
func protect[A, R any](ctx context.Context, args A, fn func(context.Context, A) (R, error)) (res R, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &bus.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, args)
}

// maxPostpone bounds one wait for an ETA, so that a far ETA is checked
// again now and then rather than trusted to one very long broker delay.
const maxPostpone = time.Hour

func (w *Worker) handle(ctx context.Context, queue string, m *bus.Message) error {
	info := Info{ID: m.ID, Name: m.Headers.Get(bus.HeaderTask), Queue: queue, Attempt: m.Attempt}
	w.mu.Lock()
	reg := w.tasks[info.Name]
	w.mu.Unlock()
	if reg == nil {
		err := fmt.Errorf("%w %q on queue %s", ErrUnknownTask, info.Name, queue)
		w.finish(ctx, info, Failure, nil, err, 0)
		return bus.NoRetry(err)
	}
	now := time.Now()
	if exp, ok := header(m, HeaderExpires); ok && now.After(exp) {
		w.finish(ctx, info, Revoked, nil, ErrExpired, 0)
		return bus.Drop(ErrExpired)
	}
	if eta, ok := header(m, HeaderETA); ok && eta.After(now) {
		return bus.Postpone(min(eta.Sub(now), maxPostpone))
	}
	if reg.limiter != nil {
		if err := reg.limiter.wait(ctx); err != nil {
			return err
		}
	}
	if p := propagator(); p != nil {
		ctx = p.Extract(ctx, m.Headers)
	}
	ctx = context.WithValue(ctx, infoKey{}, info)
	if reg.cfg.timeLimit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, reg.cfg.timeLimit)
		defer cancel()
	}
	w.record(ctx, info, Started, nil, nil)
	w.observe(Event{Info: info, Status: Started})
	start := time.Now()
	res, err := reg.run(ctx, m.Body)
	took := time.Since(start)
	if err == nil {
		w.finish(ctx, info, Success, res, nil, took)
		return nil
	}
	var pe *bus.PanicError
	if errors.As(err, &pe) {
		w.cfg.Logger.Error("task: handler panicked", "task", info.Name, "id", info.ID, "panic", pe.Value)
	}
	if errors.Is(err, bus.ErrNoRetry) || (reg.cfg.maxRetries >= 0 && m.Attempt > reg.cfg.maxRetries) {
		w.finish(ctx, info, Failure, nil, err, took)
		return bus.NoRetry(err)
	}
	delay, asked := bus.RetryDelay(err)
	if !asked {
		delay = reg.cfg.backoff(m.Attempt)
	}
	w.cfg.Logger.Info("task: retrying", "task", info.Name, "id", info.ID, "attempt", m.Attempt, "error", err, "retry_in", delay)
	w.finish(ctx, info, Retry, nil, err, took)
	return bus.RetryAfter(err, delay)
}

func header(m *bus.Message, key string) (time.Time, bool) {
	v := m.Headers.Get(key)
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

func (w *Worker) finish(ctx context.Context, info Info, st Status, res json.RawMessage, err error, took time.Duration) {
	if st == Failure {
		w.cfg.Logger.Warn("task: failed", "task", info.Name, "id", info.ID, "attempt", info.Attempt, "error", err)
	}
	w.record(ctx, info, st, res, err)
	w.observe(Event{Info: info, Status: st, Err: err, Duration: took})
}

func (w *Worker) record(ctx context.Context, info Info, st Status, res json.RawMessage, err error) {
	if w.cfg.Results == nil {
		return
	}
	s := State{ID: info.ID, Task: info.Name, Status: st, Result: res, Attempt: info.Attempt, Updated: time.Now().UTC()}
	if err != nil {
		s.Error = err.Error()
	}
	// The handler's context may be cancelled (time limit): the record is
	// still written, with a bound of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if serr := w.cfg.Results.Set(rctx, s, w.cfg.ResultTTL); serr != nil {
		w.cfg.Logger.Warn("task: recording state failed", "task", info.Name, "id", info.ID, "status", st, "error", serr)
	}
}

func (w *Worker) observe(e Event) {
	for _, o := range w.cfg.Observers {
		o(e)
	}
}

// limiter is a token bucket: rate tokens a second, up to burst saved.
type limiter struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// wait takes a token, sleeping until one is due.
func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens--
	deficit := -l.tokens
	l.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		l.tokens++ // give the token back
		l.mu.Unlock()
		return ctx.Err()
	}
}
