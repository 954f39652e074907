package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Subscribe declares the group's durable queue (bound to the topic's
// exchange) and starts consuming it with opts.Prefetch as the channel's
// QoS. When the connection is lost the subscription reconnects and
// consumes again; deliveries taken before the loss can no longer be
// settled and RabbitMQ delivers them again.
func (b *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
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
	s.wg.Add(1)
	go s.run()
	return s, nil
}

type subscription struct {
	b     *conn
	topic string
	opts  bus.SubscribeOptions
	queue string

	out  chan *delivery
	done chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	ch         *amqp.Channel // current consuming channel
	deliveries <-chan amqp.Delivery
}

// consume declares the topology on a fresh channel and starts consuming,
// waiting no longer than ctx (see conn.declare): a start that ctx
// abandons closes its channel when it is done.
func (s *subscription) consume(ctx context.Context) error {
	conn, _, err := s.b.connection(ctx)
	if err != nil {
		return err
	}
	type started struct {
		ch         *amqp.Channel
		deliveries <-chan amqp.Delivery
		err        error
	}
	done := make(chan started, 1)
	go func() {
		ch, deliveries, err := s.start(conn)
		done <- started{ch, deliveries, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.err
		}
		s.mu.Lock()
		s.ch, s.deliveries = r.ch, r.deliveries
		s.mu.Unlock()
		return nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.ch != nil {
				r.ch.Close()
			}
		}()
		return fmt.Errorf("rabbitmq: consume %s: %w", s.queue, ctx.Err())
	}
}

// start declares the topology on a fresh channel of conn and consumes
// the group's queue.
func (s *subscription) start(conn *amqp.Connection) (*amqp.Channel, <-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	fail := func(what string, err error) (*amqp.Channel, <-chan amqp.Delivery, error) {
		ch.Close()
		return nil, nil, forbidden(fmt.Errorf("rabbitmq: %s for %s: %w", what, s.queue, err))
	}
	if s.b.opts.Topology == TopologyQueue {
		if err := s.b.declareQueue(conn, ch, s.queue); err != nil {
			return fail("declare queue", err)
		}
		if ch.IsClosed() {
			// The refused declaration closed it; the queue exists.
			if ch, err = conn.Channel(); err != nil {
				return nil, nil, fmt.Errorf("rabbitmq: open channel: %w", err)
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
	return ch, deliveries, nil
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
		// The channel is gone, closed by Close or lost with the
		// connection; or the server cancelled the consumer (its queue
		// was deleted, or its node left), which leaves the channel open.
		if !ch.IsClosed() {
			select {
			case <-s.done:
				return
			default:
			}
			s.b.opts.Logger.Warn("rabbitmq: the server cancelled the consumer; consuming again", "queue", s.queue)
			// Deliveries still held on it come again from the queue.
			ch.Close()
		}
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

// Receive takes up to max deliveries from the consuming channel, waiting
// for one.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	ds, _, err := driver.FromChannel(ctx, s.out, max, func(d *delivery) driver.Delivery { return d })
	return ds, err
}

// Close closes the consuming channel; RabbitMQ requeues every delivery it
// left unacknowledged.
func (s *subscription) Close(context.Context, []driver.Delivery, []driver.Delivery) error {
	close(s.done)
	s.mu.Lock()
	ch := s.ch
	s.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
	s.wg.Wait()
	return nil
}

type delivery struct {
	s   *subscription
	ch  *amqp.Channel // the channel it came on; acks go there
	raw amqp.Delivery
	msg *bus.Message
}

func (d *delivery) Message() *bus.Message { return d.msg }

// usable reports whether the delivery can still be settled: its channel
// must be open, or RabbitMQ has already requeued it.
func (d *delivery) usable() error {
	if d.ch.IsClosed() {
		return fmt.Errorf("%w: the channel of this delivery was lost; RabbitMQ delivers it again", bus.ErrClosed)
	}
	return nil
}

func (d *delivery) Ack(ctx context.Context) error {
	if err := d.usable(); err != nil {
		return err
	}
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq: ack: %w", err)
	}
	return nil
}

// Retry republishes the message, then acknowledges the delivery: to the
// group's retry queue for the delay (whose TTL dead-letters it back into
// the group's queue), or straight back to the group's queue. Republishing
// keeps other messages flowing and carries the attempt count, which
// RabbitMQ's own requeue does not. A crash between the two steps leaves
// the delivery unacknowledged, so it comes back: at least once, never
// lost.
func (d *delivery) Retry(ctx context.Context, delay time.Duration, attempts int) error {
	if err := d.usable(); err != nil {
		return err
	}
	s, b := d.s, d.s.b
	var err error
	if delay > 0 {
		step := delayStep(delay)
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
			err = b.send(ctx, "", rq, []amqp.Publishing{publishing(d.msg, attempts+1)})
		}
	} else {
		err = b.send(ctx, "", s.queue, []amqp.Publishing{publishing(d.msg, attempts+1)})
	}
	return d.after(err)
}

// DeadLetter publishes dead to the dead-letter topic, then acknowledges
// the delivery.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	if err := d.usable(); err != nil {
		return err
	}
	return d.after(d.s.b.Send(ctx, topic, []*bus.Message{dead}))
}

// after acknowledges the delivery once its republished form is confirmed,
// or rejects it back into its queue when that failed.
func (d *delivery) after(err error) error {
	if err != nil {
		d.raw.Reject(true)
		return fmt.Errorf("rabbitmq: nack of %s: %w", d.msg.ID, err)
	}
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq: ack after republish: %w", err)
	}
	return nil
}
