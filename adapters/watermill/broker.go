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
// publishes the bus.DeadLetter copy to the dead-letter topic through the
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
	pub   message.Publisher
	fixed message.Subscriber
	opts  Options

	mu       sync.Mutex
	closed   bool
	byGroup  map[string]message.Subscriber // built by opts.NewSubscriber
	open     map[*subscription]struct{}
	attempts *AttemptLog

	closeOnce sync.Once
	closeErr  error
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
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
	return &Broker{
		pub:      pub,
		fixed:    sub,
		opts:     opts,
		byGroup:  map[string]message.Subscriber{},
		open:     map[*subscription]struct{}{},
		attempts: opts.Attempts,
	}, nil
}

// Features returns Options.Features with NackDelay set to Options.DelayNacks.
func (b *Broker) Features() bus.Features {
	f := b.opts.Features
	f.NackDelay = b.opts.DelayNacks
	return f
}

// Publish converts msgs to watermill messages and publishes them in one
// call of the watermill publisher. Watermill publishers stop at the first
// failure without saying which messages were stored, so a failure is a
// *bus.PublishError naming every message of the batch.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if b.isClosed() {
		return bus.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := bus.Prepare(msgs, b.opts.Features.MaxMessageSize); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
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
// opts.Group. The subscription lives until its Close or the Broker's Close;
// ctx bounds only the call, though its values reach the watermill
// subscriber.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Prefetch < 0 {
		return nil, &bus.ConfigError{Problems: []error{fmt.Errorf("negative Prefetch %d", opts.Prefetch)}}
	}
	opts = opts.WithDefaults(topic)
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
	s := &subscription{
		b:         b,
		topic:     topic,
		opts:      opts,
		ch:        ch,
		cancel:    cancel,
		slots:     make(chan struct{}, opts.Prefetch),
		done:      make(chan struct{}),
		unsettled: map[*delivery]struct{}{},
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = s.Close()
		return nil, bus.ErrClosed
	}
	b.open[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

func (b *Broker) subscriberFor(group string) (message.Subscriber, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
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

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close closes every subscription (giving their unsettled messages back
// with a watermill Nack), then the watermill subscribers and the
// publisher. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		subs := make([]*subscription, 0, len(b.open))
		for s := range b.open {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		for _, s := range subs {
			_ = s.Close()
		}

		// byGroup is no longer written once closed is set.
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
		for g, s := range b.byGroup {
			closeOnce(fmt.Sprintf("subscriber of group %q", g), s)
		}
		if b.fixed != nil {
			closeOnce("subscriber", b.fixed)
		}
		closeOnce("publisher", b.pub)
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
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

// subscription is one watermill subscription seen as a bus.Subscription.
type subscription struct {
	b      *Broker
	topic  string
	opts   bus.SubscribeOptions
	ch     <-chan *message.Message
	cancel context.CancelFunc
	slots  chan struct{} // one token per unsettled delivery, up to Prefetch

	mu        sync.Mutex
	closed    bool
	done      chan struct{} // closed by Close
	unsettled map[*delivery]struct{}
}

// Receive returns the next message of the watermill subscription. It
// returns an error matching bus.ErrClosed when the subscription or the
// Broker is closed, or when the watermill subscriber closed its channel.
func (s *subscription) Receive(ctx context.Context) (bus.Delivery, error) {
	// A closed subscription answers the same way every time, whichever of
	// the ready cases below select would pick.
	select {
	case <-s.done:
		return nil, bus.ErrClosed
	default:
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.done:
		return nil, bus.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var wm *message.Message
	select {
	case m, ok := <-s.ch:
		if !ok {
			<-s.slots
			select {
			case <-s.done: // our own Close closed the watermill subscriber
				return nil, bus.ErrClosed
			default:
			}
			return nil, fmt.Errorf("%w: the watermill subscriber closed its channel for %q", bus.ErrClosed, s.topic)
		}
		wm = m
	case <-s.done:
		<-s.slots
		return nil, bus.ErrClosed
	case <-ctx.Done():
		<-s.slots
		return nil, ctx.Err()
	}

	m := fromWatermill(wm, true)
	m.Attempt = s.b.attempts.next(s.key(wm.UUID))
	d := &delivery{s: s, wm: wm, m: m}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.b.attempts.failed(s.key(wm.UUID), m.Attempt)
		wm.Nack()
		<-s.slots
		return nil, bus.ErrClosed
	}
	s.unsettled[d] = struct{}{}
	s.mu.Unlock()
	return d, nil
}

// key names a message in the attempt log; "" means untracked.
func (s *subscription) key(id string) string {
	if id == "" {
		return ""
	}
	return s.topic + "\x00" + s.opts.Group + "\x00" + id
}

// Close ends the watermill subscription and gives every unsettled message,
// and every message waiting out a delayed Nack, back with a watermill Nack.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	back := make([]*delivery, 0, len(s.unsettled))
	for d := range s.unsettled {
		if d.timer != nil {
			if !d.timer.Stop() {
				continue // fired: its callback nacks it
			}
			d.timer = nil
		} else {
			d.state = givenBack
		}
		back = append(back, d)
	}
	clear(s.unsettled)
	s.mu.Unlock()

	for _, d := range back {
		s.b.attempts.failed(s.key(d.wm.UUID), d.m.Attempt)
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
	s.b.mu.Lock()
	delete(s.b.open, s)
	s.b.mu.Unlock()
	return nil
}

type deliveryState int

const (
	unsettled deliveryState = iota
	settled
	givenBack
)

// delivery is one watermill message seen as a bus.Delivery.
type delivery struct {
	s  *subscription
	wm *message.Message
	m  *bus.Message

	// Guarded by s.mu.
	state deliveryState
	timer *time.Timer // a delayed Nack in progress
}

func (d *delivery) Message() *bus.Message { return d.m }

// settle moves the delivery out of the unsettled set, or says why it
// cannot.
func (d *delivery) settle() error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case d.state == settled:
		return bus.ErrAlreadyAcked
	case d.state == givenBack || s.closed:
		return bus.ErrClosed
	}
	d.state = settled
	delete(s.unsettled, d)
	<-s.slots
	return nil
}

// Ack acks the watermill message.
func (d *delivery) Ack(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.settle(); err != nil {
		return err
	}
	d.s.b.attempts.forget(d.s.key(d.wm.UUID))
	d.wm.Ack()
	return nil
}

// Nack dead-letters the message (see Broker) or nacks the watermill
// message, after opts.Delay when Options.DelayNacks is set.
func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := d.s
	key := s.key(d.wm.UUID)
	record := func() { s.b.attempts.failed(key, d.m.Attempt) }
	if opts.Postpone {
		// Not a failure: the next delivery keeps this attempt number.
		record = func() { s.b.attempts.failed(key, d.m.Attempt-1) }
	} else if opts.DeadLetter || s.opts.Exhausted(d.m.Attempt) {
		if err := d.settle(); err != nil {
			return err
		}
		return d.deadLetter(ctx, opts.Reason)
	}
	if !s.b.opts.DelayNacks || opts.Delay <= 0 {
		if err := d.settle(); err != nil {
			return err
		}
		record()
		d.wm.Nack()
		return nil
	}

	// The message stays with the subscription, so that Close can give it
	// back at once, but frees its prefetch slot: for the bus it is settled.
	s.mu.Lock()
	switch {
	case d.state == settled:
		s.mu.Unlock()
		return bus.ErrAlreadyAcked
	case d.state == givenBack || s.closed:
		s.mu.Unlock()
		return bus.ErrClosed
	}
	d.state = settled
	<-s.slots
	d.timer = time.AfterFunc(opts.Delay, func() {
		s.mu.Lock()
		// A nil timer means Close stopped it and nacks the message itself.
		mine := d.timer != nil
		d.timer = nil
		delete(s.unsettled, d)
		s.mu.Unlock()
		if mine {
			record()
			d.wm.Nack()
		}
	})
	s.mu.Unlock()
	return nil
}

func (d *delivery) deadLetter(ctx context.Context, reason error) error {
	s := d.s
	dl := toWatermill(bus.DeadLetter(d.m, s.topic, s.opts.Group, reason, time.Now()))
	dl.SetContext(ctx)
	if err := s.b.pub.Publish(s.opts.DeadLetterTopic, dl); err != nil {
		s.b.attempts.failed(s.key(d.wm.UUID), d.m.Attempt)
		d.wm.Nack()
		return fmt.Errorf("watermill: dead-lettering to %q failed, message nacked instead: %w", s.opts.DeadLetterTopic, err)
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
