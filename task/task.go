package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Errors of the task layer, matched with errors.Is.
var (
	// ErrUnknownTask: a worker received a task it has no handler for. The
	// message is dead-lettered with this reason.
	ErrUnknownTask = errors.New("task: unknown task name")
	// ErrBadPayload: the arguments do not decode into the task's type. The
	// message is dead-lettered with this reason.
	ErrBadPayload = errors.New("task: arguments do not decode")
	// ErrExpired: the task's expiry passed before a worker ran it.
	ErrExpired = errors.New("task: expired before it ran")
)

// Headers the task layer adds to its messages. The task's name travels in
// bus.HeaderTask and its id is the message ID.
const (
	HeaderETA     = wire.ETA     // RFC 3339 time before which it must not run
	HeaderExpires = wire.Expires // RFC 3339 time after which it must not run
	// HeaderPriority is carried for backends and peers that order by it.
	HeaderPriority = wire.Priority
)

// DefaultQueue is the queue (topic) of tasks defined without Queue.
const DefaultQueue = "tasks"

// Task is a named task whose arguments have type A. Define it once, in a
// package both producers and workers import:
//
//	var SendSMS = task.Define[SMS]("sms.send", task.MaxRetries(5))
//
// A's JSON encoding is the wire format of the arguments.
type Task[A any] struct {
	name string
	cfg  config
}

// Define declares a task. Options set its queue, retries, backoff, time
// limit and rate limit; options given at enqueue time (Countdown, ETA,
// Expires, ...) apply to one call.
func Define[A any](name string, opts ...Option) *Task[A] {
	t := &Task[A]{name: name, cfg: defaults()}
	for _, o := range opts {
		o(&t.cfg)
	}
	return t
}

// Name returns the task's name.
func (t *Task[A]) Name() string { return t.name }

// Queue returns the queue the task is sent to by default.
func (t *Task[A]) Queue() string { return t.cfg.queue }

// Delay enqueues the task with its default options and returns its id at
// once: the id is known before any worker runs the task.
func (t *Task[A]) Delay(ctx context.Context, p bus.Publisher, args A) (string, error) {
	return t.Apply(ctx, p, args)
}

// Apply enqueues the task with per-call options such as Countdown, ETA,
// Expires, OnQueue or WithID.
func (t *Task[A]) Apply(ctx context.Context, p bus.Publisher, args A, opts ...Option) (string, error) {
	cfg := t.options(opts)
	if err := cfg.validate(t.name); err != nil {
		return "", err
	}
	m, err := t.message(ctx, cfg, args)
	if err != nil {
		return "", err
	}
	if err := p.Publish(ctx, cfg.queue, m); err != nil {
		return "", fmt.Errorf("task %s: enqueue: %w", t.name, err)
	}
	return m.ID, nil
}

// DelayMany enqueues one task per element of args in a single publish, a
// batch the backend sends in about one round trip, and returns their ids
// in order. Options apply to every task (WithID must not be given).
func (t *Task[A]) DelayMany(ctx context.Context, p bus.Publisher, args []A, opts ...Option) ([]string, error) {
	cfg := t.options(opts)
	if err := cfg.validate(t.name); err != nil {
		return nil, err
	}
	if cfg.id != "" && len(args) > 1 {
		return nil, &bus.ConfigError{Problems: []error{errors.New("WithID given for several tasks")}}
	}
	msgs := make([]*bus.Message, len(args))
	ids := make([]string, len(args))
	for i, a := range args {
		m, err := t.message(ctx, cfg, a)
		if err != nil {
			return nil, err
		}
		msgs[i], ids[i] = m, m.ID
	}
	if err := p.Publish(ctx, cfg.queue, msgs...); err != nil {
		return nil, fmt.Errorf("task %s: enqueue %d tasks: %w", t.name, len(msgs), err)
	}
	return ids, nil
}

func (t *Task[A]) options(opts []Option) config {
	cfg := t.cfg
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// message encodes one run of the task.
func (t *Task[A]) message(ctx context.Context, cfg config, args A) (*bus.Message, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("task %s: encode arguments: %w", t.name, err)
	}
	m := bus.NewMessage(body)
	if cfg.id != "" {
		m.ID = cfg.id
	}
	m.Key = cfg.key
	m.Headers[bus.HeaderTask] = t.name
	m.Headers["content-type"] = "application/json"
	now := time.Now()
	if eta := cfg.eta(now); !eta.IsZero() {
		m.Headers[HeaderETA] = eta.UTC().Format(time.RFC3339Nano)
	}
	if !cfg.expires.IsZero() {
		m.Headers[HeaderExpires] = cfg.expires.UTC().Format(time.RFC3339Nano)
	} else if cfg.expiresIn > 0 {
		m.Headers[HeaderExpires] = now.Add(cfg.expiresIn).UTC().Format(time.RFC3339Nano)
	}
	if cfg.priority != nil {
		m.Headers[HeaderPriority] = strconv.Itoa(*cfg.priority)
	}
	if prop := propagator(); prop != nil {
		prop.Inject(ctx, m.Headers)
	}
	return m, nil
}

// Option configures a task at definition or at enqueue time.
type Option func(*config)

type config struct {
	queue      string
	maxRetries int
	backoff    bus.Backoff
	timeLimit  time.Duration
	rate       float64
	burst      int

	// per call
	id        string
	key       string
	countdown time.Duration
	at        time.Time
	expires   time.Time
	expiresIn time.Duration
	priority  *int
}

func defaults() config {
	return config{
		queue:      DefaultQueue,
		maxRetries: 3,
		backoff:    bus.ExponentialBackoff(time.Second, 10*time.Minute),
	}
}

func (c config) validate(name string) error {
	var p []error
	if name == "" {
		p = append(p, errors.New("task name is empty"))
	}
	if c.queue == "" {
		p = append(p, errors.New("queue is empty"))
	}
	if c.maxRetries < -1 {
		p = append(p, fmt.Errorf("MaxRetries %d: want >= 0, or -1 for no limit", c.maxRetries))
	}
	if c.countdown < 0 {
		p = append(p, fmt.Errorf("Countdown %v is negative", c.countdown))
	}
	if c.timeLimit < 0 {
		p = append(p, fmt.Errorf("TimeLimit %v is negative", c.timeLimit))
	}
	if c.rate < 0 {
		p = append(p, fmt.Errorf("RateLimit %v is negative", c.rate))
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

func (c config) eta(now time.Time) time.Time {
	switch {
	case !c.at.IsZero():
		return c.at
	case c.countdown > 0:
		return now.Add(c.countdown)
	}
	return time.Time{}
}

// OnQueue sends the task to queue (a bus topic). Default DefaultQueue.
func OnQueue(queue string) Option { return func(c *config) { c.queue = queue } }

// MaxRetries is how many times a failed task is retried before it is
// dead-lettered; -1 means no limit. Default 3.
func MaxRetries(n int) Option { return func(c *config) { c.maxRetries = n } }

// RetryBackoff chooses the delay before each retry.
// Default bus.ExponentialBackoff(time.Second, 10*time.Minute): doubling
// delays with jitter.
func RetryBackoff(b bus.Backoff) Option { return func(c *config) { c.backoff = b } }

// TimeLimit bounds a run through its context. Default 0: no limit.
func TimeLimit(d time.Duration) Option { return func(c *config) { c.timeLimit = d } }

// RateLimit lets a worker start at most perSecond runs of the task per
// second, with bursts of up to burst. Default: no limit.
func RateLimit(perSecond float64, burst int) Option {
	return func(c *config) { c.rate, c.burst = perSecond, max(burst, 1) }
}

// Countdown makes the task run no sooner than d from now.
func Countdown(d time.Duration) Option { return func(c *config) { c.countdown = d } }

// ETA makes the task run no sooner than t.
func ETA(t time.Time) Option { return func(c *config) { c.at = t } }

// Expires makes workers discard the task, recording FAILURE with
// ErrExpired, if it has not started by t.
func Expires(t time.Time) Option { return func(c *config) { c.expires = t } }

// ExpiresIn is Expires(now + d).
func ExpiresIn(d time.Duration) Option { return func(c *config) { c.expiresIn = d } }

// WithID sets the task id instead of a generated one, for idempotent
// enqueueing.
func WithID(id string) Option { return func(c *config) { c.id = id } }

// WithKey sets the message key: tasks with one key keep their order where
// the backend and the worker (OrderedByKey) allow it.
func WithKey(key string) Option { return func(c *config) { c.key = key } }

// Priority is carried in HeaderPriority for backends and peers that order
// by it; the built-in backends deliver in queue order.
func Priority(p int) Option { return func(c *config) { c.priority = &p } }
