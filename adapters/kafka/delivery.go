package kafka

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Delivery states, guarded by subscription.mu.
const (
	stateHeld     = iota // fetched, not handed out
	stateOut             // handed out by Receive
	stateSettling        // a Nack is writing a retry or a dead letter
	stateSettled         // acknowledged, or moved on by a Nack
	stateRevoked         // its partition went to another member first
)

// delivery is one receipt of a record.
type delivery struct {
	s     *subscription
	p     *partition
	e     *entry
	rec   *franz.Record // as fetched: retries are written from it
	msg   *bus.Message
	due   time.Time // a retry is held until then
	index int       // in subscription.held
	state int
}

var (
	_ driver.Delivery = (*delivery)(nil)
	_ driver.HandOff  = (*delivery)(nil)
)

func (d *delivery) Message() *bus.Message { return d.msg }

// HandOff marks the delivery handed out, or drops it when its partition
// is moving to another member: no record of a revoked partition reaches a
// handler.
func (d *delivery) HandOff() bool {
	s, p := d.s, d.p
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.revoked || p.draining {
		return false
	}
	d.state = stateOut
	p.out[d] = struct{}{}
	d.e.deliveries++
	if end := d.e.offset + 1; end > p.delivered {
		p.delivered = end
	}
	return true
}

// settleable says whether d may be settled now; callers hold s.mu.
func (d *delivery) settleable() error {
	if d.state == stateRevoked {
		return ErrRevoked
	}
	return nil
}

// Ack marks the record processed; the partition's offset is committed past
// it once every earlier record is settled too.
func (d *delivery) Ack(ctx context.Context) error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := d.settleable(); err != nil {
		return err
	}
	d.e.done = true
	d.finish()
	d.next()
	return nil
}

// finish ends d's time out; callers hold s.mu.
func (d *delivery) finish() {
	d.state = stateSettled
	delete(d.p.out, d)
	d.p.trim()
	select {
	case d.s.settled <- struct{}{}:
	default:
	}
}

// next lets, with BlockingRetry, the next record of d's key go, or holds
// again; callers hold s.mu.
func (d *delivery) next() {
	if n := d.p.advance(d); n != nil {
		d.hold(n)
	}
}

// hold queues d in the subscription until it is due, and wakes Receive to
// look; callers hold s.mu.
func (d *delivery) hold(x *delivery) {
	s := d.s
	heap.Push(&s.held, x)
	x.p.waiting++
	s.pause(x.p)
	if s.wake != nil {
		s.wake()
	}
}

// Retry writes the message to the group's retry topic, due after delay
// and numbered attempts+1, and then lets the partition's offset pass it.
// With Options.BlockingRetry a retry stays in place instead: the
// partition redelivers the same record after the delay, and later records
// with its key wait for it.
func (d *delivery) Retry(ctx context.Context, delay time.Duration, attempts int) error {
	s := d.s
	if s.c.opts.BlockingRetry {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := d.settleable(); err != nil {
			return err
		}
		if attempts < d.msg.Attempt {
			// The commit metadata counts attempts, not deliveries.
			d.e.deliveries--
		}
		d.finish()
		d.hold(d.again(delay, attempts+1))
		return nil
	}
	return d.write(ctx, attempts+1, func() error { return d.retry(ctx, delay, attempts+1) })
}

// DeadLetter writes dead to the dead-letter topic, and then lets the
// partition's offset pass the record.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	return d.write(ctx, d.msg.Attempt, func() error { return d.deadLetter(ctx, topic, dead) })
}

// write runs a Nack's write and settles the delivery after it. When the
// write fails, the record stays uncommitted and the subscription delivers
// it again after a pause, numbered attempt. A record waiting to come again
// does not count against the window: it is held by the subscription, as
// a retry record waiting to be due is.
func (d *delivery) write(ctx context.Context, attempt int, w func() error) error {
	s := d.s
	s.mu.Lock()
	if err := d.settleable(); err != nil {
		s.mu.Unlock()
		return err
	}
	d.state = stateSettling
	s.mu.Unlock()

	err := w()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if d.state != stateRevoked && !d.p.revoked {
			d.finish()
			d.hold(d.again(redeliverPause, attempt))
		}
		return err
	}
	d.e.done = true
	d.finish()
	d.next()
	return nil
}

// redeliverPause is how long a record whose Nack could not be written
// waits before the subscription delivers it again.
const redeliverPause = time.Second

// again makes the in-place redelivery of a record.
func (d *delivery) again(delay time.Duration, attempt int) *delivery {
	m, _, _ := decode(d.rec)
	m.Attempt = attempt
	return &delivery{s: d.s, p: d.p, e: d.e, rec: d.rec, msg: m, due: time.Now().Add(delay), index: -1, state: stateHeld}
}

func (d *delivery) retry(ctx context.Context, delay time.Duration, attempt int) error {
	s := d.s
	if _, err := s.c.ensureTopic(ctx, s.retryTopic, 0); err != nil {
		return err
	}
	r := d.rec
	h := make([]franz.RecordHeader, 0, len(r.Headers)+4)
	hasID := false
	for _, x := range r.Headers {
		switch x.Key {
		case HeaderAttempt, HeaderDue:
			continue
		case HeaderID:
			hasID = true
		}
		h = append(h, x)
	}
	if !hasID {
		// A foreign record keeps the ID it was delivered with.
		h = append(h,
			franz.RecordHeader{Key: HeaderID, Value: []byte(d.msg.ID)},
			franz.RecordHeader{Key: HeaderPublishedAt, Value: strconv.AppendInt(nil, d.msg.PublishedAt.UnixNano(), 10)})
	}
	h = append(h,
		franz.RecordHeader{Key: HeaderAttempt, Value: strconv.AppendInt(nil, int64(attempt), 10)},
		franz.RecordHeader{Key: HeaderDue, Value: strconv.AppendInt(nil, time.Now().Add(delay).UnixMilli(), 10)})
	// The retry topic has the topic's partition count, and the key (kept
	// as fetched, nil or not) picks the same partition index. A keyless
	// record goes to a random partition.
	rec := &franz.Record{Topic: s.retryTopic, Key: r.Key, Value: r.Value, Headers: h, Timestamp: time.Now(), Partition: rand.Int32()}
	if err := s.c.write(ctx, s.retryTopic, []*franz.Record{rec}); err != nil {
		return fmt.Errorf("kafka: nack: %w", err)
	}
	return nil
}

func (d *delivery) deadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	s := d.s
	if _, err := s.c.ensureTopic(ctx, topic, 0); err != nil {
		return err
	}
	rec := encode(topic, dead, 0, time.Time{})
	rec.Partition = rand.Int32()
	if err := s.c.write(ctx, topic, []*franz.Record{rec}); err != nil {
		return fmt.Errorf("kafka: dead-letter: %w", err)
	}
	return nil
}
