package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
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

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.Broker          = (*Client)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ bus.Shutdowner      = (*Broker)(nil)
)

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
	dc := &conn{b: b}
	c := &Client{Broker: driver.New(dc, driver.Options{Name: "memory"})}
	dc.c = c
	b.mu.Lock()
	closed := b.closed
	if !closed {
		b.conns[c] = struct{}{}
	}
	b.mu.Unlock()
	if closed {
		c.Close()
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

// Shutdown is Close: an in-process broker has nothing to wait for.
func (b *Broker) Shutdown(context.Context) error { return b.Close() }

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

// publish stores copies of msgs, which the portable side has validated.
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

// Client is one connection to a Broker. It implements bus.Broker on the
// driver layer (see package bus/driver), which owns the rules every
// backend shares.
type Client struct {
	*driver.Broker
}

// conn is the driver of one Client.
type conn struct {
	b *Broker
	c *Client
}

var _ driver.Driver = (*conn)(nil)

func (c *conn) Features() bus.Features { return c.b.Features() }

// Send stores msgs in every group of topic. The batch is stored
// atomically: all messages or none.
func (c *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	return c.b.publish(topic, msgs)
}

// Subscribe joins opts.Group on topic, creating the group when it does
// not exist.
func (c *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	return &subscription{b: b, g: b.groupLocked(topic, opts.Group)}, nil
}

// Close forgets the client; the portable side has closed its
// subscriptions, which gave back what they held.
func (c *conn) Close(context.Context) error {
	c.b.mu.Lock()
	delete(c.b.conns, c.c)
	c.b.mu.Unlock()
	return nil
}

type subscription struct {
	b *Broker
	g *group
}

// Receive takes up to max entries from the group, waiting for one.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	b := s.b
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, bus.ErrClosed
		}
		if n := min(max, s.g.ready.len()); n > 0 {
			out := make([]driver.Delivery, n)
			for i := range out {
				e := s.g.ready.pop()
				e.attempts++
				d := &delivery{s: s, e: e, msg: e.msg.Clone()}
				d.msg.Attempt = e.attempts
				out[i] = d
			}
			s.g.unsettled += n
			b.mu.Unlock()
			return out, nil
		}
		wake := s.g.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close gives what the subscription held back to the group, at its head
// and in the order received, so it is the next delivered; what was never
// handed out keeps its attempt count.
func (s *subscription) Close(_ context.Context, unhanded, unsettled []driver.Delivery) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	back := append(unsettled, unhanded...)
	for i := len(back) - 1; i >= 0; i-- {
		d := back[i].(*delivery)
		if i >= len(unsettled) {
			d.e.attempts--
		}
		s.g.ready.pushFront(d.e)
	}
	s.g.unsettled -= len(back)
	if len(back) > 0 {
		close(s.g.wake)
		s.g.wake = make(chan struct{})
	}
	return nil
}

type delivery struct {
	s   *subscription
	e   *entry
	msg *bus.Message
}

func (d *delivery) Message() *bus.Message { return d.msg }

// settled takes d off the group's unsettled count.
func (d *delivery) settled() {
	d.s.b.mu.Lock()
	d.s.g.unsettled--
	d.s.b.mu.Unlock()
}

func (d *delivery) Ack(context.Context) error {
	d.settled()
	return nil
}

func (d *delivery) Retry(_ context.Context, delay time.Duration, attempts int) error {
	d.settled()
	d.e.attempts = attempts
	d.s.b.requeueAfter(d.s.g, d.e, delay)
	return nil
}

func (d *delivery) DeadLetter(_ context.Context, topic string, dead *bus.Message) error {
	d.settled()
	if err := d.s.b.publish(topic, []*bus.Message{dead}); err != nil {
		return fmt.Errorf("memory: dead-letter to %q: %w", topic, err)
	}
	return nil
}

var errNoName = errors.New("memory: broker name must not contain a path")
