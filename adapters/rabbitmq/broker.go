package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// ErrConfirmTimeout reports published messages whose publisher confirms
// did not come within Options.ConfirmTimeout.
var ErrConfirmTimeout = errors.New("rabbitmq: no publisher confirm within Options.ConfirmTimeout")

// ErrUnroutable reports a published message that no queue received.
var ErrUnroutable = errors.New("rabbitmq: message unroutable (no queue bound to the exchange)")

// Broker is a connection to RabbitMQ that publishes and subscribes. It
// reconnects with backoff when the connection is lost, and restores its
// consumers and their topology. It implements bus.Broker on the driver
// layer (see package bus/driver).
type Broker struct {
	*driver.Broker
	c *conn
}

// conn is the driver of a Broker.
type conn struct {
	opts     Options
	redacted string       // the URL without its password, for messages
	nodes    []string     // one amqp URI per host of the URL
	node     atomic.Int64 // index in nodes of the node to dial first

	mu      sync.Mutex
	conn    *amqp.Connection
	gen     uint64        // connection generation, +1 per reconnect
	ready   chan struct{} // closed while conn is usable
	pubs    []*pubChannel // for generation gen
	opening []*opening    // a channel of pubs being opened, per slot
	topo    *amqp.Channel // declarations, for generation gen
	known   map[string]bool
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
	next    atomic.Uint64
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ driver.Driver       = (*conn)(nil)
)

// New connects to RabbitMQ. The dial is bounded by ctx and
// Options.DialTimeout; errors match bus.ErrUnreachable, bus.ErrAuth, or
// bus.ErrForbidden for a vhost the user may not open.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	u, _ := bus.ParseURL(opts.URL)
	b := &conn{
		opts:     opts,
		redacted: u.Redacted(),
		nodes:    nodeURLs(u),
		ready:    make(chan struct{}),
		known:    map[string]bool{},
		closing:  make(chan struct{}),
	}
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.install(conn)
	b.wg.Add(1)
	go b.supervise(conn)
	return &Broker{Broker: driver.New(b, driver.Options{Logger: opts.Logger, Name: "rabbitmq"}), c: b}, nil
}

// Features describes RabbitMQ's guarantees as this adapter uses it:
// persistent messages in durable queues, confirmed on publish.
func (b *conn) Features() bus.Features {
	return bus.Features{OrderedPerKey: true, Persistent: true, NackDelay: true, MaxMessageSize: b.opts.MaxMessageSize}
}

// nodeURLs returns one URI per host of u's comma-separated host list.
func nodeURLs(u *url.URL) []string {
	var out []string
	for h := range strings.SplitSeq(u.Host, ",") {
		c := *u
		c.Host = h
		out = append(out, c.String())
	}
	return out
}

// dial connects to the first node that answers, starting with the one
// that answered last (or the next one after a connection loss), each
// within Options.DialTimeout. Refused credentials or vhost end the
// search: the nodes of a cluster share them.
func (b *conn) dial(ctx context.Context) (*amqp.Connection, error) {
	first := int(b.node.Load())
	var errs []error
	for i := range b.nodes {
		n := (first + i) % len(b.nodes)
		conn, err := b.dialNode(ctx, b.nodes[n])
		if err == nil {
			b.node.Store(int64(n))
			return conn, nil
		}
		if !errors.Is(err, bus.ErrUnreachable) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("%w: none of the %d nodes of %s answered: %w", bus.ErrUnreachable, len(b.nodes), b.redacted, errors.Join(errs...))
}

func (b *conn) dialNode(ctx context.Context, uri string) (*amqp.Connection, error) {
	redacted := uri
	if u, err := url.Parse(uri); err == nil {
		redacted = u.Redacted()
	}
	timeout := b.opts.DialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	cfg := amqp.Config{
		Heartbeat:       b.opts.Heartbeat,
		Locale:          "en_US",
		TLSClientConfig: b.opts.TLS.Clone(), // amqp091 sets ServerName on it
		Properties:      amqp.Table{"connection_name": b.opts.ConnectionName},
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the AMQP handshake; amqp091 clears it once open.
			c.SetDeadline(time.Now().Add(timeout))
			return c, nil
		},
	}
	conn, err := amqp.DialConfig(uri, cfg)
	if err == nil {
		return conn, nil
	}
	var aerr *amqp.Error
	switch {
	case errors.Is(err, amqp.ErrCredentials) || (errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused):
		return nil, fmt.Errorf("%w: %s: %v", bus.ErrAuth, redacted, err)
	case errors.As(err, &aerr) && aerr.Code == amqp.NotAllowed:
		// The credentials are good, the vhost is not the user's (or
		// does not exist).
		return nil, fmt.Errorf("%w: %s: %v", bus.ErrForbidden, redacted, err)
	}
	return nil, fmt.Errorf("%w: %s: %v", bus.ErrUnreachable, redacted, err)
}

// forbidden marks err with bus.ErrForbidden when RabbitMQ refused the
// operation with ACCESS_REFUSED (403): the user lacks the configure, write
// or read permission on the exchange or queue.
func forbidden(err error) error {
	var aerr *amqp.Error
	if err != nil && !errors.Is(err, bus.ErrForbidden) && errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused {
		return fmt.Errorf("%w: %w", bus.ErrForbidden, err)
	}
	return err
}

// install makes conn the current connection.
func (b *conn) install(conn *amqp.Connection) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conn = conn
	b.gen++
	b.pubs = nil
	b.opening = nil
	b.topo = nil
	b.known = map[string]bool{}
	close(b.ready)
}

// supervise waits for the connection to fail and reconnects with backoff
// until Close.
func (b *conn) supervise(conn *amqp.Connection) {
	defer b.wg.Done()
	for {
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-b.closing:
			return
		case err := <-lost:
			b.mu.Lock()
			b.ready = make(chan struct{})
			b.conn = nil
			b.mu.Unlock()
			b.opts.Logger.Warn("rabbitmq: connection lost; reconnecting", "url", b.redacted, "error", err)
			// The node may be gone: try the next one first.
			b.node.Store((b.node.Load() + 1) % int64(len(b.nodes)))
		}
		pause := b.opts.ReconnectBackoff
		for {
			select {
			case <-b.closing:
				return
			case <-time.After(pause):
			}
			ctx, cancel := context.WithTimeout(context.Background(), b.opts.DialTimeout)
			c, err := b.dial(ctx)
			cancel()
			if err == nil {
				conn = c
				b.install(conn)
				b.opts.Logger.Info("rabbitmq: reconnected", "url", b.redacted, "node", b.node.Load()+1)
				break
			}
			b.opts.Logger.Warn("rabbitmq: reconnect failed", "url", b.redacted, "error", err, "retry_in", pause)
			pause = min(pause*2, 32*b.opts.ReconnectBackoff)
		}
	}
}

// connection waits until a connection is up and returns it with its
// generation.
func (b *conn) connection(ctx context.Context) (*amqp.Connection, uint64, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, 0, bus.ErrClosed
		}
		conn, gen, ready := b.conn, b.gen, b.ready
		b.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, gen, nil
		}
		var wait <-chan time.Time
		if conn != nil {
			// Lost, but the supervisor has not noticed yet.
			ready = nil
			wait = time.After(10 * time.Millisecond)
		}
		select {
		case <-wait:
		case <-ready:
		case <-b.closing:
			return nil, 0, bus.ErrClosed
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("rabbitmq: waiting for the connection to %s: %w", b.redacted, ctx.Err())
		}
	}
}

// Close closes the connection; the portable side has closed the
// subscriptions, and RabbitMQ requeues what they left unacknowledged.
func (b *conn) Close(context.Context) error {
	b.mu.Lock()
	b.closed = true
	close(b.closing)
	b.mu.Unlock()
	b.mu.Lock()
	conn := b.conn
	b.mu.Unlock()
	var err error
	if conn != nil {
		err = conn.Close()
		if errors.Is(err, amqp.ErrClosed) {
			err = nil
		}
	}
	b.wg.Wait()
	return err
}

// names of the RabbitMQ objects behind a topic.
func (b *conn) exchange(topic string) string {
	if b.opts.Topology == TopologyQueue {
		return ""
	}
	return topic
}

func (b *conn) queue(topic, group string) string {
	if b.opts.Topology == TopologyQueue {
		return topic
	}
	return topic + "." + group
}

func (b *conn) queueArgs() amqp.Table {
	return amqp.Table{"x-queue-type": b.opts.QueueType}
}

// declare runs fn on the declaration channel of the current connection,
// once per key and connection generation. A failed declaration closes
// the channel; the next call opens another.
//
// It waits no longer than ctx: AMQP's declarations have no deadline of
// their own, so a node that stopped answering would hold them until the
// heartbeat gave the connection up. A declaration that ctx abandons goes
// on in the background with the channel it took, which is then closed,
// and the next declaration opens a channel of its own.
func (b *conn) declare(ctx context.Context, key string, fn func(conn *amqp.Connection, ch *amqp.Channel) error) error {
	conn, gen, err := b.connection(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	if gen != b.gen {
		b.mu.Unlock()
		return fmt.Errorf("rabbitmq: connection lost while declaring %s", key)
	}
	if b.known[key] {
		b.mu.Unlock()
		return nil
	}
	ch := b.topo // taken: another declaration meanwhile opens its own
	b.topo = nil
	b.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				done <- fmt.Errorf("rabbitmq: open channel: %w", err)
				return
			}
		}
		if err := fn(conn, ch); err != nil {
			done <- forbidden(fmt.Errorf("rabbitmq: declare %s: %w", key, err))
			return
		}
		done <- nil
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		go func() {
			<-done
			if ch != nil {
				ch.Close()
			}
		}()
		return fmt.Errorf("rabbitmq: declare %s: %w", key, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil && gen == b.gen {
		b.known[key] = true
	}
	if ch != nil && !ch.IsClosed() && b.topo == nil && gen == b.gen {
		b.topo = ch // back for the next declaration
	} else if ch != nil {
		go ch.Close()
	}
	return err
}

// declareTopic declares what Publish needs: the topic's exchange and,
// unless NoDefaultGroup, the default group's queue.
func (b *conn) declareTopic(ctx context.Context, topic string) error {
	return b.declare(ctx, "topic "+topic, func(conn *amqp.Connection, ch *amqp.Channel) error {
		if b.opts.Topology == TopologyQueue {
			return b.declareQueue(conn, ch, topic)
		}
		if err := ch.ExchangeDeclare(topic, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return err
		}
		if b.opts.NoDefaultGroup {
			return nil
		}
		return declareGroupQueue(ch, topic, b.queue(topic, bus.DefaultGroup), b.queueArgs())
	})
}

// declareQueue declares the durable queue of TopologyQueue. A queue that
// other clients already declared with other arguments (say non-durable, as
// many tutorials do) is used as it is: RabbitMQ refuses the redeclaration
// with PRECONDITION_FAILED and closes the channel, and a passive declare
// on a new channel then checks that the queue exists.
func (b *conn) declareQueue(conn *amqp.Connection, ch *amqp.Channel, queue string) error {
	_, err := ch.QueueDeclare(queue, true, false, false, false, b.queueArgs())
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.PreconditionFailed {
		return err
	}
	passive, cerr := conn.Channel()
	if cerr != nil {
		return err
	}
	defer passive.Close()
	if _, perr := passive.QueueDeclarePassive(queue, false, false, false, false, nil); perr != nil {
		return fmt.Errorf("%w (and it does not exist: %v)", err, perr)
	}
	b.opts.Logger.Info("rabbitmq: using an existing queue declared with other arguments", "queue", queue, "reason", aerr.Reason)
	return nil
}

func declareGroupQueue(ch *amqp.Channel, exchange, queue string, args amqp.Table) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return err
	}
	return ch.QueueBind(queue, "", exchange, false, nil)
}

// Send publishes msgs to topic with publisher confirms: every message is
// published before any confirm is awaited, so a batch costs about one
// round trip. It returns when RabbitMQ has confirmed every message;
// messages it refused, returned as unroutable, or left unconfirmed when
// the connection failed are named in a *bus.PublishError.
func (b *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	if err := checkHeaderFrame(msgs); err != nil {
		return err
	}
	if err := b.declareTopic(ctx, topic); err != nil {
		return err
	}
	out := make([]amqp.Publishing, len(msgs))
	for i, m := range msgs {
		out[i] = publishing(m, 1)
	}
	key := ""
	if b.opts.Topology == TopologyQueue {
		key = topic
	}
	return b.send(ctx, b.exchange(topic), key, out)
}

// pubChannel is a confirm-mode channel shared by concurrent publishers.
type pubChannel struct {
	ch     *amqp.Channel
	gen    uint64
	window chan struct{} // one token per unconfirmed message

	// RabbitMQ sends basic.return before the basic.ack of the same
	// message, and amqp091 handles both on one goroutine, so a return is
	// in this buffer (sized to the window) before its confirm is seen.
	returns  chan amqp.Return
	mu       sync.Mutex
	unrouted map[string]int // returned message IDs not yet claimed
}

func (b *conn) pubChannel(ctx context.Context) (*pubChannel, error) {
	conn, gen, err := b.connection(ctx)
	if err != nil {
		return nil, err
	}
	i := int(b.next.Add(1) % uint64(b.opts.PublishChannels))
	b.mu.Lock()
	if gen != b.gen {
		b.mu.Unlock()
		return nil, errors.New("rabbitmq: connection lost")
	}
	if len(b.pubs) != b.opts.PublishChannels {
		b.pubs = make([]*pubChannel, b.opts.PublishChannels)
		b.opening = make([]*opening, b.opts.PublishChannels)
	}
	if pc := b.pubs[i]; pc != nil && !pc.ch.IsClosed() {
		b.mu.Unlock()
		return pc, nil
	}
	// Opened apart, so that a node that stopped answering holds up
	// neither this caller past its context nor the others.
	o := b.opening[i]
	if o == nil {
		o = &opening{done: make(chan struct{})}
		b.opening[i] = o
		go b.openPub(conn, gen, i, o)
	}
	b.mu.Unlock()
	select {
	case <-o.done:
		return o.pc, o.err
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitmq: open channel: %w", ctx.Err())
	}
}

// opening is a publish channel being opened: pc or err once done closes.
type opening struct {
	done chan struct{}
	pc   *pubChannel
	err  error
}

// openPub opens the publish channel of slot i for connection generation
// gen, and installs it unless the connection changed meanwhile.
func (b *conn) openPub(conn *amqp.Connection, gen uint64, i int, o *opening) {
	defer close(o.done)
	pc, err := b.newPub(conn, gen)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == gen && len(b.opening) > i && b.opening[i] == o {
		b.opening[i] = nil
		if err == nil {
			b.pubs[i] = pc
		}
	} else if err == nil {
		pc.ch.Close()
		err = errors.New("rabbitmq: connection lost")
	}
	o.pc, o.err = pc, err
}

func (b *conn) newPub(conn *amqp.Connection, gen uint64) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("rabbitmq: enable publisher confirms: %w", err)
	}
	pc := &pubChannel{
		ch:       ch,
		gen:      gen,
		window:   make(chan struct{}, b.opts.ConfirmWindow),
		returns:  make(chan amqp.Return, b.opts.ConfirmWindow),
		unrouted: map[string]int{},
	}
	ch.NotifyReturn(pc.returns)
	return pc, nil
}

// send publishes to one exchange and routing key and waits for confirms.
func (b *conn) send(ctx context.Context, exchange, key string, msgs []amqp.Publishing) error {
	pc, err := b.pubChannel(ctx)
	if err != nil {
		return &bus.PublishError{Unconfirmed: indexes(0, len(msgs)), Err: err}
	}
	pending := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	var sendErr error
	for i := range msgs {
		select {
		case pc.window <- struct{}{}:
		case <-ctx.Done():
			sendErr = ctx.Err()
		}
		if sendErr != nil {
			break
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msgs[i])
		if err != nil {
			<-pc.window
			sendErr = fmt.Errorf("rabbitmq: publish: %w", err)
			break
		}
		pending = append(pending, dc)
	}

	var unconfirmed []int
	waitErr := sendErr
	wctx, cancel := context.WithTimeoutCause(ctx, b.opts.ConfirmTimeout, ErrConfirmTimeout)
	defer cancel()
	for i, dc := range pending {
		ok, err := dc.WaitContext(wctx)
		if err != nil {
			if ctx.Err() == nil && errors.Is(context.Cause(wctx), ErrConfirmTimeout) {
				err = fmt.Errorf("%w (%v): %d of %d messages", ErrConfirmTimeout, b.opts.ConfirmTimeout, len(pending)-i, len(msgs))
			}
			// Give the window token back when the confirm does come.
			go func() { <-dc.Done(); <-pc.window }()
			unconfirmed = append(unconfirmed, i)
			waitErr = err
			continue
		}
		<-pc.window
		if !ok {
			unconfirmed = append(unconfirmed, i)
			if waitErr == nil {
				waitErr = errors.New("rabbitmq: broker refused the message (nack) or the channel closed before confirming it")
			}
		}
	}
	unconfirmed = append(unconfirmed, indexes(len(pending), len(msgs))...)

	// Confirmed messages may still have been returned as unroutable.
	pc.mu.Lock()
	for drained := false; !drained; {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				// amqp091 closes the returns channel with the channel
				// (connection lost): a closed channel would spin here.
				drained = true
				break
			}
			pc.unrouted[r.MessageId]++
		default:
			drained = true
		}
	}
	for i := range pending {
		if id := msgs[i].MessageId; pc.unrouted[id] > 0 {
			pc.unrouted[id]--
			if pc.unrouted[id] == 0 {
				delete(pc.unrouted, id)
			}
			unconfirmed = append(unconfirmed, i)
			waitErr = fmt.Errorf("%w: exchange %q", ErrUnroutable, exchange)
		}
	}
	pc.mu.Unlock()

	if len(unconfirmed) == 0 {
		return nil
	}
	return &bus.PublishError{Unconfirmed: dedupe(unconfirmed), Err: forbidden(waitErr)}
}

func indexes(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func dedupe(s []int) []int {
	seen := make(map[int]bool, len(s))
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// retryQueue names the queue where a group's messages wait out a delay;
// its TTL dead-letters them back into the group's queue.
func retryQueue(queue string, delay time.Duration) string {
	return queue + ".retry." + strconv.FormatInt(delay.Milliseconds(), 10) + "ms"
}

// delaySteps are the delays retry queues exist for. A requested delay is
// rounded to the nearest step: each retry queue has one TTL, so messages
// in it expire in order and a long delay never holds back a short one.
var delaySteps = []time.Duration{
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// delayStep rounds d to the nearest step, comparing ratios.
func delayStep(d time.Duration) time.Duration {
	if d <= delaySteps[0] {
		return delaySteps[0]
	}
	for i := 1; i < len(delaySteps); i++ {
		lo, hi := delaySteps[i-1], delaySteps[i]
		if d <= hi {
			if float64(d)/float64(lo) < float64(hi)/float64(d) {
				return lo
			}
			return hi
		}
	}
	return delaySteps[len(delaySteps)-1]
}
