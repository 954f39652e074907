package clients

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

// AMQP is a RabbitMQ connection through amqp091-go directly, laid out
// like the rabbitmq adapter's default topology: a topic is a durable
// fanout exchange, a group a durable classic queue "<topic>.<group>"
// bound to it. Messages are persistent and every Publish waits for the
// publisher confirms of its messages; each concurrent Publish has a
// channel of its own, so confirms of concurrent calls pipeline.
type AMQP struct {
	conn *amqp.Connection
	mu   sync.Mutex
	idle []*amqp.Channel
	made map[string]bool // exchanges declared
	subs subs
}

// OpenAMQP dials rawURL (amqp:// or amqps://).
func OpenAMQP(ctx context.Context, rawURL string) (bus.Broker, error) {
	conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second),
		Properties: amqp.Table{"connection_name": "omnibus comparisons: amqp091-go"}})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrUnreachable, err)
	}
	return &AMQP{conn: conn, made: map[string]bool{}}, nil
}

func (b *AMQP) channel() (*amqp.Channel, error) {
	b.mu.Lock()
	if n := len(b.idle); n > 0 {
		ch := b.idle[n-1]
		b.idle = b.idle[:n-1]
		b.mu.Unlock()
		return ch, nil
	}
	b.mu.Unlock()
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, err
	}
	return ch, nil
}

func (b *AMQP) declare(ch *amqp.Channel, topic string) error {
	b.mu.Lock()
	done := b.made[topic]
	b.mu.Unlock()
	if done {
		return nil
	}
	if err := ch.ExchangeDeclare(topic, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return err
	}
	b.mu.Lock()
	b.made[topic] = true
	b.mu.Unlock()
	return nil
}

// Publish sends msgs persistent and waits for their confirms.
func (b *AMQP) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	ch, err := b.channel()
	if err != nil {
		return err
	}
	if err := b.declare(ch, topic); err != nil {
		ch.Close()
		return err
	}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, "", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: m.Body})
		if err != nil {
			ch.Close()
			return err
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			ch.Close()
			return err
		}
		if !ok {
			ch.Close()
			return errors.New("amqp: message nacked by the broker")
		}
	}
	b.mu.Lock()
	b.idle = append(b.idle, ch)
	b.mu.Unlock()
	return nil
}

// Subscribe consumes the group's queue with a prefetch window, acking
// each delivery on its own.
func (b *AMQP) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	opts = driver.Defaults(topic, opts)
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	queue := topic + "." + opts.Group
	err = errors.Join(
		ch.ExchangeDeclare(topic, amqp.ExchangeFanout, true, false, false, false, nil),
		func() error { _, err := ch.QueueDeclare(queue, true, false, false, false, nil); return err }(),
		ch.QueueBind(queue, "", topic, false, nil),
		ch.Qos(opts.Prefetch, 0, false),
	)
	if err != nil {
		ch.Close()
		return nil, err
	}
	in, err := ch.ConsumeWithContext(context.WithoutCancel(ctx), queue, "", false, false, false, false, nil)
	if err != nil {
		ch.Close()
		return nil, err
	}
	// The broker enforces the window, so the feed's own is only a bound.
	f := newFeed(opts.Prefetch, ch.Close)
	if err := b.subs.add(f); err != nil {
		ch.Close()
		return nil, err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			if f.take(context.Background(), 1) == 0 {
				return
			}
			select {
			case d, ok := <-in:
				if !ok {
					return
				}
				f.push(&delivery{msg: bus.Message{Body: d.Body}, ack: func(context.Context) error { return d.Ack(false) }})
			case <-f.done:
				return
			}
		}
	}()
	return f, nil
}

// Close closes the subscriptions and the connection.
func (b *AMQP) Close() error {
	err := b.subs.closeAll()
	if cerr := b.conn.Close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	return err
}
