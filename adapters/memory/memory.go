package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// DefaultMaxMessageSize is the message size limit when
// Options.MaxMessageSize is zero.
const DefaultMaxMessageSize = 16 << 20

// Options configure a Broker. The zero value is valid.
type Options struct {
	// MaxMessageSize is the largest bus.Message.Size accepted, in bytes.
	// Default DefaultMaxMessageSize; negative means no limit.
	MaxMessageSize int
}

func (o Options) limit() int {
	switch {
	case o.MaxMessageSize == 0:
		return DefaultMaxMessageSize
	case o.MaxMessageSize < 0:
		return 0
	}
	return o.MaxMessageSize
}

// Broker is an in-process message broker. It implements bus.Broker itself,
// and hands out further client connections with Connect.
//
// Every group of a topic receives every message published to the topic
// after the group was created; subscriptions in one group compete for its
// messages. Messages published to a topic that has no group yet wait for
// the first group created. Nothing survives the process.
type Broker struct {
	opts Options

	mu     sync.Mutex
	topics map[string]*topic
	timers map[*time.Timer]struct{} // delayed redeliveries
	closed bool
	self   *Client // serves the Broker's own bus.Broker methods
	conns  map[*Client]struct{}
}

var _ bus.Broker = (*Broker)(nil)
var _ bus.Broker = (*Client)(nil)
var _ bus.FeatureReporter = (*Broker)(nil)

// New starts an in-process broker.
func New(opts Options) *Broker {
	b := &Broker{
		opts:   opts,
		topics: map[string]*topic{},
		timers: map[*time.Timer]struct{}{},
		conns:  map[*Client]struct{}{},
	}
	b.self = b.Connect()
	return b
}

// Connect returns a new client connection to the broker. Closing the
// client closes its subscriptions only, as a dropped connection would.
func (b *Broker) Connect() *Client {
	c := &Client{b: b, subs: map[*subscription]struct{}{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.closed = true
	} else {
		b.conns[c] = struct{}{}
	}
	return c
}

// Features describes the guarantees of the memory backend.
func (b *Broker) Features() bus.Features {
	return bus.Features{OrderedPerKey: true, Persistent: false, NackDelay: true, MaxMessageSize: b.opts.limit()}
}

// Publish stores msgs in every group of topic. See bus.Publisher.
func (b *Broker) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	return b.self.Publish(ctx, topic, msgs...)
}

// Subscribe opens a subscription. See bus.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	return b.self.Subscribe(ctx, topic, opts)
}

// Close shuts the broker down: every client and subscription is closed and
// every stored message is discarded. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for t := range b.timers {
		t.Stop()
	}
	b.timers = nil
	conns := b.conns
	b.conns = nil
	b.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	b.self.Close()
	forget(b)
	return nil
}

// Stats reports how many messages wait in a group: ready to deliver,
// delivered but unsettled, and waiting for a delayed redelivery.
type Stats struct {
	Ready, Unsettled, Delayed int
}

// GroupStats returns the counts of a topic's group (zero when unknown).
func (b *Broker) GroupStats(topic, group string) Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[topic]
	if t == nil {
		return Stats{}
	}
	g := t.groups[group]
	if g == nil {
		return Stats{}
	}
	return Stats{Ready: g.ready.len(), Unsettled: g.unsettled, Delayed: g.delayed}
}

type topic struct {
	groups  map[string]*group
	backlog queue // published while the topic had no group
}

type group struct {
	name      string
	ready     queue
	unsettled int
	delayed   int
	wake      chan struct{} // closed when ready gains entries
}

// entry is one group's copy of a message. msg is never modified after
// publication; deliveries hand out clones.
type entry struct {
	msg      *bus.Message
	attempts int // deliveries so far
}

func (g *group) push(e *entry) {
	g.ready.push(e)
	close(g.wake)
	g.wake = make(chan struct{})
}

func (b *Broker) topicLocked(name string) *topic {
	t := b.topics[name]
	if t == nil {
		t = &topic{groups: map[string]*group{}}
		b.topics[name] = t
	}
	return t
}

// publish stores copies of msgs, which Prepare has validated.
func (b *Broker) publish(topicName string, msgs []*bus.Message) error {
	stored := make([]*bus.Message, len(msgs))
	for i, m := range msgs {
		c := m.Clone()
		c.Attempt = 0
		stored[i] = c
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return bus.ErrClosed
	}
	t := b.topicLocked(topicName)
	if len(t.groups) == 0 {
		for _, m := range stored {
			t.backlog.push(&entry{msg: m})
		}
		return nil
	}
	for _, g := range t.groups {
		for _, m := range stored {
			g.ready.push(&entry{msg: m})
		}
		close(g.wake)
		g.wake = make(chan struct{})
	}
	return nil
}

func (b *Broker) groupLocked(topicName, name string) *group {
	t := b.topicLocked(topicName)
	g := t.groups[name]
	if g == nil {
		g = &group{name: name, wake: make(chan struct{})}
		if len(t.groups) == 0 {
			g.ready = t.backlog
			t.backlog = queue{}
		}
		t.groups[name] = g
	}
	return g
}

// requeueAfter puts e back into g after d, as a broker-held timer.
func (b *Broker) requeueAfter(g *group, e *entry, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if d <= 0 {
		g.push(e)
		return
	}
	g.delayed++
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.closed {
			return
		}
		delete(b.timers, t)
		g.delayed--
		g.push(e)
	})
	b.timers[t] = struct{}{}
}

// Client is one connection to a Broker. It implements bus.Broker.
type Client struct {
	b *Broker

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
}

// Publish validates msgs and stores them in every group of topic. The
// batch is stored atomically: all messages or none.
func (c *Client) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if err := c.check(ctx, topic); err != nil {
		return err
	}
	if err := bus.Prepare(msgs, c.b.opts.limit()); err != nil {
		return err
	}
	return c.b.publish(topic, msgs)
}

func (c *Client) check(ctx context.Context, topic string) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	return bus.CheckCall(ctx, closed, topic)
}

// Subscribe joins opts.Group on topic, creating the group when it does not
// exist. See bus.Subscriber.
func (c *Client) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if err := c.check(ctx, topic); err != nil {
		return nil, err
	}
	if opts.Prefetch < 0 {
		return nil, &bus.ConfigError{Problems: []error{fmt.Errorf("prefetch %d is negative", opts.Prefetch)}}
	}
	opts = opts.WithDefaults(topic)
	// Holding c.mu keeps a racing Close from leaving a group behind.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, bus.ErrClosed
	}
	b := c.b
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, bus.ErrClosed
	}
	g := b.groupLocked(topic, opts.Group)
	b.mu.Unlock()

	s := &subscription{
		c:         c,
		g:         g,
		topic:     topic,
		opts:      opts,
		window:    make(chan struct{}, opts.Prefetch),
		done:      make(chan struct{}),
		unsettled: map[*delivery]struct{}{},
	}
	c.subs[s] = struct{}{}
	return s, nil
}

// Close closes the client's subscriptions, giving their unsettled
// deliveries back to their groups. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for s := range subs {
		s.Close()
	}
	c.b.mu.Lock()
	delete(c.b.conns, c)
	c.b.mu.Unlock()
	return nil
}

type subscription struct {
	c     *Client
	g     *group
	topic string
	opts  bus.SubscribeOptions

	window    chan struct{} // one token per unsettled delivery
	done      chan struct{}
	closeOnce sync.Once
	unsettled map[*delivery]struct{} // guarded by c.b.mu
	closed    bool                   // guarded by c.b.mu
}

func (s *subscription) Receive(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case s.window <- struct{}{}:
	case <-s.done:
		return nil, bus.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b := s.c.b
	for {
		b.mu.Lock()
		if s.closed || b.closed {
			b.mu.Unlock()
			<-s.window
			return nil, bus.ErrClosed
		}
		if e := s.g.ready.pop(); e != nil {
			e.attempts++
			d := &delivery{s: s, e: e, msg: e.msg.Clone()}
			d.msg.Attempt = e.attempts
			s.unsettled[d] = struct{}{}
			s.g.unsettled++
			b.mu.Unlock()
			return d, nil
		}
		wake := s.g.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-s.done:
		case <-ctx.Done():
			<-s.window
			return nil, ctx.Err()
		}
	}
}

// Close gives unsettled deliveries back to the group, at its head, so they
// are the next delivered.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		b := s.c.b
		b.mu.Lock()
		s.closed = true
		close(s.done)
		if len(s.unsettled) > 0 && !b.closed {
			for d := range s.unsettled {
				s.g.ready.pushFront(d.e)
			}
			s.g.unsettled -= len(s.unsettled)
			close(s.g.wake)
			s.g.wake = make(chan struct{})
		}
		s.unsettled = nil
		b.mu.Unlock()
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
	})
	return nil
}

// settle removes d from the subscription's unsettled set.
func (s *subscription) settle(d *delivery) error {
	b := s.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed || b.closed {
		return bus.ErrClosed
	}
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrAlreadyAcked
	}
	delete(s.unsettled, d)
	s.g.unsettled--
	<-s.window
	return nil
}

type delivery struct {
	s       *subscription
	e       *entry
	msg     *bus.Message
	settled atomic.Bool
}

func (d *delivery) Message() *bus.Message { return d.msg }

func (d *delivery) Ack(ctx context.Context) error { return d.s.settle(d) }

func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	if err := d.s.settle(d); err != nil {
		return err
	}
	s := d.s
	if opts.Postpone {
		d.e.attempts--
		s.c.b.requeueAfter(s.g, d.e, opts.Delay)
		return nil
	}
	if opts.DeadLetter || s.opts.Exhausted(d.e.attempts) {
		dead := bus.DeadLetter(d.msg, s.topic, s.opts.Group, opts.Reason, time.Now())
		if err := s.c.b.publish(s.opts.DeadLetterTopic, []*bus.Message{dead}); err != nil {
			return fmt.Errorf("memory: dead-letter to %q: %w", s.opts.DeadLetterTopic, err)
		}
		return nil
	}
	s.c.b.requeueAfter(s.g, d.e, opts.Delay)
	return nil
}

var errNoName = errors.New("memory: broker name must not contain a path")
