package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
)

// Subscribe declares the group's durable queue (bound to the topic's
// exchange) and starts consuming it with opts.Prefetch as the channel's
// QoS. When the connection is lost the subscription reconnects and
// consumes again; deliveries taken before the loss can no longer be
// settled and RabbitMQ delivers them again.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if err := b.check(ctx, topic); err != nil {
		return nil, err
	}
	if opts.Prefetch < 0 {
		return nil, &bus.ConfigError{Problems: []error{fmt.Errorf("prefetch %d is negative", opts.Prefetch)}}
	}
	opts = opts.WithDefaults(topic)
	s := &subscription{
		b:     b,
		topic: topic,
		opts:  opts,
		queue: b.queue(topic, opts.Group),
		out:   make(chan *delivery),
		done:  make(chan struct{}),
	}
	if err := s.consume(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.Close()
		return nil, bus.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	s.wg.Add(1)
	go s.run()
	return s, nil
}

type subscription struct {
	b     *Broker
	topic string
	opts  bus.SubscribeOptions
	queue string

	out       chan *delivery
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu         sync.Mutex
	ch         *amqp.Channel // current consuming channel
	deliveries <-chan amqp.Delivery
}

// consume declares the topology on a fresh channel and starts consuming.
func (s *subscription) consume(ctx context.Context) error {
	conn, _, err := s.b.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	fail := func(what string, err error) error {
		ch.Close()
		return forbidden(fmt.Errorf("rabbitmq: %s for %s: %w", what, s.queue, err))
	}
	if s.b.opts.Topology == TopologyQueue {
		if err := s.b.declareQueue(conn, ch, s.queue); err != nil {
			return fail("declare queue", err)
		}
		if ch.IsClosed() {
			// The refused declaration closed it; the queue exists.
			if ch, err = conn.Channel(); err != nil {
				return fmt.Errorf("rabbitmq: open channel: %w", err)
			}
		}
	} else {
		if err := ch.ExchangeDeclare(s.topic, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return fail("declare exchange", err)
		}
		if err := declareGroupQueue(ch, s.topic, s.queue, s.b.queueArgs()); err != nil {
			return fail("declare queue", err)
		}
	}
	if err := ch.Qos(s.opts.Prefetch, 0, false); err != nil {
		return fail("set prefetch", err)
	}
	deliveries, err := ch.Consume(s.queue, "", false, false, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	s.mu.Lock()
	s.ch, s.deliveries = ch, deliveries
	s.mu.Unlock()
	return nil
}

// run hands deliveries to Receive and consumes again after a channel or
// connection loss, until Close.
func (s *subscription) run() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		ch, in := s.ch, s.deliveries
		s.mu.Unlock()
		for raw := range in {
			d := &delivery{s: s, ch: ch, raw: raw, msg: message(&raw)}
			select {
			case s.out <- d:
			case <-s.done:
				return
			}
		}
		// The channel is gone: closed by Close, or lost with the connection.
		pause := s.b.opts.ReconnectBackoff
		for {
			select {
			case <-s.done:
				return
			default:
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.done:
				case <-ctx.Done():
				}
				cancel()
			}()
			err := s.consume(ctx)
			cancel()
			if err == nil {
				break
			}
			if errors.Is(err, bus.ErrClosed) {
				return
			}
			s.b.opts.Logger.Warn("rabbitmq: resuming consumer failed", "queue", s.queue, "error", err, "retry_in", pause)
			select {
			case <-s.done:
				return
			case <-time.After(pause):
			}
			pause = min(pause*2, 32*s.b.opts.ReconnectBackoff)
		}
	}
}

func (s *subscription) Receive(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case d := <-s.out:
		return d, nil
	case <-s.done:
		return nil, bus.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes the consuming channel; RabbitMQ requeues every delivery it
// left unacknowledged.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		ch := s.ch
		s.mu.Unlock()
		if ch != nil {
			ch.Close()
		}
		s.wg.Wait()
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
	})
	return nil
}

func (s *subscription) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

type delivery struct {
	s       *subscription
	ch      *amqp.Channel // the channel it came on; acks go there
	raw     amqp.Delivery
	msg     *bus.Message
	settled atomic.Bool
}

func (d *delivery) Message() *bus.Message { return d.msg }

// usable reports whether the delivery can still be settled: its channel
// must be open, or RabbitMQ has already requeued it.
func (d *delivery) usable() error {
	if d.s.closed() {
		return bus.ErrClosed
	}
	if d.ch.IsClosed() {
		return fmt.Errorf("%w: the channel of this delivery was lost; RabbitMQ delivers it again", bus.ErrClosed)
	}
	return nil
}

func (d *delivery) Ack(ctx context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrAlreadyAcked
	}
	if err := d.usable(); err != nil {
		return err
	}
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq: ack: %w", err)
	}
	return nil
}

// Nack republishes the message, then acknowledges the delivery: to the
// dead-letter topic when its attempts are used up, to the group's retry
// queue for the delay (whose TTL dead-letters it back into the group's
// queue), or straight back to the group's queue. Republishing keeps
// other messages flowing and carries the attempt count, which RabbitMQ's
// own requeue does not. A crash between the two steps leaves the delivery
// unacknowledged, so it comes back: at least once, never lost.
func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrAlreadyAcked
	}
	if err := d.usable(); err != nil {
		return err
	}
	s, b := d.s, d.s.b
	next := d.msg.Attempt + 1
	if opts.Postpone {
		next = d.msg.Attempt
	}
	var err error
	switch {
	case !opts.Postpone && (opts.DeadLetter || s.opts.Exhausted(d.msg.Attempt)):
		dead := bus.DeadLetter(d.msg, s.topic, s.opts.Group, opts.Reason, time.Now())
		err = b.Publish(ctx, s.opts.DeadLetterTopic, dead)
	case opts.Delay > 0:
		step := delayStep(opts.Delay)
		rq := retryQueue(s.queue, step)
		err = b.declare(ctx, "retry "+rq, func(_ *amqp.Connection, ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(rq, true, false, false, false, amqp.Table{
				"x-message-ttl":             step.Milliseconds(),
				"x-dead-letter-exchange":    "",
				"x-dead-letter-routing-key": s.queue,
			})
			return err
		})
		if err == nil {
			err = b.send(ctx, "", rq, []amqp.Publishing{publishing(d.msg, next)})
		}
	default:
		err = b.send(ctx, "", s.queue, []amqp.Publishing{publishing(d.msg, next)})
	}
	if err != nil {
		// Leave it unacknowledged; RabbitMQ redelivers it.
		d.raw.Reject(true)
		return fmt.Errorf("rabbitmq: nack of %s: %w", d.msg.ID, err)
	}
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq: ack after republish: %w", err)
	}
	return nil
}
