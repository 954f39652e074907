package watermill

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// DefaultTrackedMessages is the room of a Broker's own AttemptLog.
const DefaultTrackedMessages = 100_000

// Options configure a Broker. Each field's doc states its default.
type Options struct {
	// NewSubscriber builds the watermill subscriber of one consumer group,
	// since watermill pub/subs take the group in their constructor config
	// rather than in Subscribe. The Broker calls it once per group, on that
	// group's first Subscribe, and closes what it built on Close.
	// Default nil: only the subscriber given to NewBroker is used, and only
	// for Group.
	NewSubscriber func(group string) (message.Subscriber, error)
	// Group is the consumer group that the subscriber given to NewBroker
	// consumes as. Subscribe for any other group needs NewSubscriber.
	// Default bus.DefaultGroup.
	Group string
	// Features describe what the wrapped pub/sub guarantees (ordering,
	// persistence, size limit); the bridge cannot find out by itself.
	// MaxMessageSize is enforced on Publish. NackDelay is ignored: Features
	// reports DelayNacks in its place. Default: the zero Features, which
	// promises nothing.
	Features bus.Features
	// DelayNacks makes Nack honour NackOptions.Delay by holding the
	// watermill message for the delay before nacking it. Watermill's
	// subscriber contract has no delayed nack, and most pub/subs hand a
	// subscription its next message only after the previous one is acked
	// or nacked, so with them a delayed Nack stalls the whole subscription
	// for the delay. Set it only for a pub/sub that keeps delivering while
	// messages are unsettled. Default false: Nack redelivers at once.
	DelayNacks bool
	// Attempts holds the attempt counts (see Broker). Brokers given the
	// same AttemptLog count together, which suits a process that opens
	// several Brokers on one backend: a message given back by one and
	// redelivered to another keeps its count. Default: a log of the
	// Broker's own, with room for DefaultTrackedMessages messages.
	Attempts *AttemptLog
}

// Validate reports every problem of the options at once.
func (o Options) Validate() error {
	var problems []error
	if o.Features.MaxMessageSize < 0 {
		problems = append(problems, fmt.Errorf("negative Features.MaxMessageSize %d", o.Features.MaxMessageSize))
	}
	if len(problems) > 0 {
		return &bus.ConfigError{Problems: problems}
	}
	return nil
}

// Broker runs a watermill Publisher and Subscriber as an omnibus bus.Broker.
//
// Attempts and dead-lettering: watermill's subscriber contract knows only
// Ack and Nack, and Nack redelivers, so the Broker counts attempts itself.
// It remembers, per topic and group, how many deliveries of each failing
// message ID (the watermill UUID) have ended without an Ack, and numbers
// the next delivery of that ID from there. When a Nack asks for
// dead-lettering or the delivery was the last of MaxAttempts, the Broker
// publishes the dead-letter copy (see package bus/driver) to the dead-letter topic through the
// watermill publisher and then acks the original; if that publish fails,
// it nacks the original instead, so nothing is lost.
//
// The counts live in this process only: deliveries seen by other
// processes, or before a restart, or by a Broker with another AttemptLog,
// or forgotten past the log's room, are not counted. A message is
// therefore never dead-lettered early, but may be delivered more than
// MaxAttempts times. Messages with an empty UUID cannot be tracked: each
// of their deliveries is attempt 1.
//
// The alternative, acking the failed message and republishing a copy with
// its attempt count, was rejected: a watermill publisher writes to the
// topic, so every consumer group, not only the failing one, would receive
// the copy again.
//
// Prefetch: a Subscription holds at most SubscribeOptions.Prefetch
// unsettled deliveries, but most watermill pub/subs hand one subscription
// one message at a time and wait for its Ack or Nack before the next, so
// in practice a Subscription has one delivery in flight whatever the
// prefetch. Concurrency then comes from more Subscriptions (competing
// consumers, for pub/subs whose subscribers share a group) or from a
// pub/sub that delivers ahead.
//
// Publish cannot be cancelled through ctx once it has started, because
// watermill's Publish takes no context; ctx is set as each message's
// context, which some watermill publishers honour.
type Broker struct {
	*driver.Broker
	c *bridge
}

// bridge is the driver of a Broker.
type bridge struct {
	pub   message.Publisher
	fixed message.Subscriber
	opts  Options

	mu       sync.Mutex
	byGroup  map[string]message.Subscriber // built by opts.NewSubscriber
	attempts *AttemptLog
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ driver.Driver       = (*bridge)(nil)
)

// NewBroker returns a Broker that publishes with pub and consumes with sub,
// or with subscribers built by opts.NewSubscriber. pub must not be nil; sub
// may be nil when opts.NewSubscriber is set. The Broker owns pub, sub and
// every subscriber it builds: its Close closes them.
func NewBroker(pub message.Publisher, sub message.Subscriber, opts Options) (*Broker, error) {
	var problems []error
	if pub == nil {
		problems = append(problems, errors.New("publisher is nil"))
	}
	if sub == nil && opts.NewSubscriber == nil {
		problems = append(problems, errors.New("subscriber is nil and Options.NewSubscriber is not set"))
	}
	if err := opts.Validate(); err != nil {
		var ce *bus.ConfigError
		if errors.As(err, &ce) {
			problems = append(problems, ce.Problems...)
		}
	}
	if len(problems) > 0 {
		return nil, &bus.ConfigError{Problems: problems}
	}
	if opts.Group == "" {
		opts.Group = bus.DefaultGroup
	}
	if opts.Attempts == nil {
		opts.Attempts = NewAttemptLog(DefaultTrackedMessages)
	}
	c := &bridge{
		pub:      pub,
		fixed:    sub,
		opts:     opts,
		byGroup:  map[string]message.Subscriber{},
		attempts: opts.Attempts,
	}
	return &Broker{Broker: driver.New(c, driver.Options{Name: "watermill"}), c: c}, nil
}

// Features returns Options.Features with NackDelay set to Options.DelayNacks.
func (b *bridge) Features() bus.Features {
	f := b.opts.Features
	f.NackDelay = b.opts.DelayNacks
	return f
}

// Send converts msgs to watermill messages and publishes them in one
// call of the watermill publisher. Watermill publishers stop at the first
// failure without saying which messages were stored, so a failure is a
// *bus.PublishError naming every message of the batch.
func (b *bridge) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	wms := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		wms[i] = toWatermill(m)
		wms[i].SetContext(ctx)
	}
	if err := b.pub.Publish(topic, wms...); err != nil {
		unconfirmed := make([]int, len(msgs))
		for i := range unconfirmed {
			unconfirmed[i] = i
		}
		return &bus.PublishError{Unconfirmed: unconfirmed, Err: fmt.Errorf("watermill publish to %q: %w", topic, err)}
	}
	return nil
}

// Subscribe opens a watermill subscription to topic with the subscriber of
// opts.Group. ctx bounds only the call, though its values reach the
// watermill subscriber.
func (b *bridge) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	wsub, err := b.subscriberFor(opts.Group)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := wsub.Subscribe(sctx, topic)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watermill subscribe to %q as group %q: %w", topic, opts.Group, err)
	}
	return &subscription{
		b:       b,
		topic:   topic,
		group:   opts.Group,
		ch:      ch,
		cancel:  cancel,
		delayed: map[*delivery]*time.Timer{},
	}, nil
}

func (b *bridge) subscriberFor(group string) (message.Subscriber, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if group == b.opts.Group && b.fixed != nil {
		return b.fixed, nil
	}
	if s, ok := b.byGroup[group]; ok {
		return s, nil
	}
	if b.opts.NewSubscriber == nil {
		return nil, &bus.ConfigError{Problems: []error{fmt.Errorf(
			"group %q: the watermill subscriber consumes as group %q only; set Options.NewSubscriber to consume other groups",
			group, b.opts.Group)}}
	}
	// Built under the lock so that one group never gets two subscribers.
	s, err := b.opts.NewSubscriber(group)
	if err != nil {
		return nil, fmt.Errorf("watermill: building the subscriber of group %q: %w", group, err)
	}
	if s == nil {
		return nil, fmt.Errorf("watermill: Options.NewSubscriber returned no subscriber for group %q", group)
	}
	b.byGroup[group] = s
	return s, nil
}

// Close closes the watermill subscribers and the publisher, each once;
// the portable side has closed the subscriptions, which gave their
// unsettled messages back with a watermill Nack.
func (b *bridge) Close(context.Context) error {
	b.mu.Lock()
	groups := b.byGroup
	b.byGroup = map[string]message.Subscriber{}
	b.mu.Unlock()
	var errs []error
	var closed []any
	closeOnce := func(what string, c interface{ Close() error }) {
		for _, x := range closed {
			if same(x, c) {
				return
			}
		}
		closed = append(closed, c)
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("watermill: closing %s: %w", what, err))
		}
	}
	for g, s := range groups {
		closeOnce(fmt.Sprintf("subscriber of group %q", g), s)
	}
	if b.fixed != nil {
		closeOnce("subscriber", b.fixed)
	}
	closeOnce("publisher", b.pub)
	return errors.Join(errs...)
}

// same reports whether a and b are one value, so that a watermill pub/sub
// passed as both publisher and subscriber is closed once. Values of
// incomparable dynamic types are never the same.
func same(a, b any) (eq bool) {
	defer func() {
		if recover() != nil {
			eq = false
		}
	}()
	return a == b
}

// subscription is one watermill subscription, the driver side of a
// bus.Subscription.
type subscription struct {
	b      *bridge
	topic  string
	group  string
	ch     <-chan *message.Message
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	delayed map[*delivery]*time.Timer // Nacks waiting out their delay
}

// Receive takes up to max messages of the watermill subscription, waiting
// for one. When the watermill subscriber closes its channel, the
// subscription ends with an error matching bus.ErrClosed.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	ds, closed, err := driver.FromChannel(ctx, s.ch, max, func(wm *message.Message) driver.Delivery {
		m := fromWatermill(wm, true)
		m.Attempt = s.b.attempts.next(s.key(wm.UUID))
		return &delivery{s: s, wm: wm, m: m}
	})
	if closed && len(ds) == 0 {
		return nil, fmt.Errorf("%w: the watermill subscriber closed its channel for %q", bus.ErrClosed, s.topic)
	}
	return ds, err
}

// key names a message in the attempt log; "" means untracked.
func (s *subscription) key(id string) string {
	if id == "" {
		return ""
	}
	return s.topic + "\x00" + s.group + "\x00" + id
}

// Close ends the watermill subscription and gives every message it holds
// back with a watermill Nack: those handed out and unsettled, or waiting
// out a delayed Nack, counted as an attempt, those never handed out not.
func (s *subscription) Close(_ context.Context, unhanded, unsettled []driver.Delivery) error {
	s.mu.Lock()
	s.closed = true
	var late []*delivery
	for d, t := range s.delayed {
		// A timer that fired already nacks its message itself.
		if t.Stop() {
			late = append(late, d)
			delete(s.delayed, d)
		}
	}
	s.mu.Unlock()
	for _, d := range late {
		d.wm.Nack()
	}
	for _, x := range unsettled {
		d := x.(*delivery)
		s.b.attempts.failed(s.key(d.wm.UUID), d.m.Attempt)
		d.wm.Nack()
	}
	for _, x := range unhanded {
		d := x.(*delivery)
		s.b.attempts.failed(s.key(d.wm.UUID), d.m.Attempt-1)
		d.wm.Nack()
	}
	s.cancel()
	// A watermill subscriber may already hold the next message, blocked
	// handing it over; nacking what still arrives until it closes the
	// channel (as its contract says it does once ctx is cancelled) gives
	// such a message back instead of leaving it stuck.
	go func() {
		for wm := range s.ch {
			wm.Nack()
		}
	}()
	return nil
}

// delivery is one watermill message, the driver side of a bus.Delivery.
type delivery struct {
	s  *subscription
	wm *message.Message
	m  *bus.Message
}

func (d *delivery) Message() *bus.Message { return d.m }

// Ack acks the watermill message.
func (d *delivery) Ack(context.Context) error {
	d.s.b.attempts.forget(d.s.key(d.wm.UUID))
	d.wm.Ack()
	return nil
}

// Retry records the attempts and nacks the watermill message, which
// redelivers it; after delay when Options.DelayNacks is set.
func (d *delivery) Retry(_ context.Context, delay time.Duration, attempts int) error {
	s := d.s
	s.b.attempts.failed(s.key(d.wm.UUID), attempts)
	if !s.b.opts.DelayNacks || delay <= 0 {
		d.wm.Nack()
		return nil
	}
	// The message stays with the subscription, so that Close can give it
	// back at once; for the bus it is settled.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		d.wm.Nack()
		return nil
	}
	s.delayed[d] = time.AfterFunc(delay, func() {
		s.mu.Lock()
		_, mine := s.delayed[d]
		delete(s.delayed, d)
		s.mu.Unlock()
		if mine {
			d.wm.Nack()
		}
	})
	return nil
}

// DeadLetter publishes dead to topic through the watermill publisher and
// acks the original; when that publish fails, it nacks the original
// instead, so nothing is lost.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	s := d.s
	dl := toWatermill(dead)
	dl.SetContext(ctx)
	if err := s.b.pub.Publish(topic, dl); err != nil {
		s.b.attempts.failed(s.key(d.wm.UUID), d.m.Attempt)
		d.wm.Nack()
		return fmt.Errorf("watermill: dead-lettering to %q failed, message nacked instead: %w", topic, err)
	}
	s.b.attempts.forget(s.key(d.wm.UUID))
	d.wm.Ack()
	return nil
}

// AttemptLog remembers, for failing messages, how many of their
// deliveries ended without an Ack, keyed by topic, group and message UUID.
// Only failures enter it, and an Ack or a dead-lettering removes the
// entry, so it holds the messages being retried; past its room the oldest
// entries are forgotten, and those messages count from 1 again. It is safe
// for concurrent use.
type AttemptLog struct {
	mu    sync.Mutex
	limit int
	byKey map[string]*list.Element
	order *list.List // of *attemptEntry, oldest first
}

type attemptEntry struct {
	key   string
	count int
}

// NewAttemptLog returns an AttemptLog with room for limit messages; a
// limit below 1 means DefaultTrackedMessages.
func NewAttemptLog(limit int) *AttemptLog {
	if limit < 1 {
		limit = DefaultTrackedMessages
	}
	return &AttemptLog{limit: limit, byKey: map[string]*list.Element{}, order: list.New()}
}

// next returns the attempt number of a new delivery of key.
func (l *AttemptLog) next(key string) int {
	if key == "" {
		return 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		return e.Value.(*attemptEntry).count + 1
	}
	return 1
}

// failed records that the delivery numbered attempt ended without an Ack.
func (l *AttemptLog) failed(key string, attempt int) {
	if key == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		ent := e.Value.(*attemptEntry)
		ent.count = max(ent.count, attempt)
		return
	}
	l.byKey[key] = l.order.PushBack(&attemptEntry{key: key, count: attempt})
	for l.order.Len() > l.limit {
		oldest := l.order.Front()
		l.order.Remove(oldest)
		delete(l.byKey, oldest.Value.(*attemptEntry).key)
	}
}

func (l *AttemptLog) forget(key string) {
	if key == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		l.order.Remove(e)
		delete(l.byKey, key)
	}
}
