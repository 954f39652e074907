package kafka

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	kgo "github.com/segmentio/kafka-go"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
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
	rec   kgo.Message // as fetched: retries are written from it
	msg   *bus.Message
	due   time.Time // a retry is held until then
	index int       // in partition.held
	state int
}

var _ bus.Delivery = (*delivery)(nil)

func (d *delivery) Message() *bus.Message { return d.msg }

// settleable says whether d may be settled now; callers hold s.mu.
func (d *delivery) settleable() error {
	switch {
	case d.state == stateSettled || d.state == stateSettling:
		return bus.ErrAlreadyAcked
	case d.s.closed:
		return bus.ErrClosed
	case d.state == stateRevoked:
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
	d.p.advance(d)
	return nil
}

// finish ends d's time out; callers hold s.mu.
func (d *delivery) finish() {
	s, p := d.s, d.p
	d.state = stateSettled
	delete(p.out, d)
	p.trim()
	<-s.window
	select {
	case p.g.settled <- struct{}{}:
	default:
	}
	p.signal()
}

// Nack writes the message to the group's retry topic, due after
// opts.Delay with its attempt count raised (kept with opts.Postpone), and
// then lets the partition's offset pass it; or, when it is to be
// dead-lettered, to the dead-letter topic. With Options.BlockingRetry a
// retry stays in place instead: the partition redelivers the same record
// after the delay, and later records with its key wait for it. If the
// write fails, the delivery stays unsettled and Nack may be called again.
func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	s := d.s
	s.mu.Lock()
	if err := d.settleable(); err != nil {
		s.mu.Unlock()
		return err
	}
	next := d.msg.Attempt + 1
	if opts.Postpone {
		next = d.msg.Attempt
	}
	dead := !opts.Postpone && (opts.DeadLetter || s.opts.Exhausted(d.msg.Attempt))
	if !dead && s.c.opts.BlockingRetry {
		if opts.Postpone {
			// The commit metadata counts attempts, not deliveries.
			d.e.deliveries--
		}
		again := d.again(opts.Delay, next)
		d.finish()
		heap.Push(&d.p.held, again)
		s.mu.Unlock()
		return nil
	}
	d.state = stateSettling
	s.nacking.Add(1)
	s.mu.Unlock()
	defer s.nacking.Done()

	var err error
	if dead {
		err = d.deadLetter(ctx, opts.Reason)
	} else {
		err = d.retry(ctx, opts.Delay, next)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		d.state = stateOut
		if d.p.revoked {
			d.state = stateRevoked
			delete(d.p.out, d)
			<-s.window
		}
		return err
	}
	d.e.done = true
	d.finish()
	d.p.advance(d)
	return nil
}

// again makes the in-place redelivery of a record for BlockingRetry.
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
		h = append(h, franz.RecordHeader{Key: x.Key, Value: x.Value})
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

func (d *delivery) deadLetter(ctx context.Context, reason error) error {
	s := d.s
	topic := s.opts.DeadLetterTopic
	if _, err := s.c.ensureTopic(ctx, topic, 0); err != nil {
		return err
	}
	dl := bus.DeadLetter(d.msg, s.topic, s.opts.Group, reason, time.Now())
	rec := encode(topic, dl, 0, time.Time{})
	rec.Partition = rand.Int32()
	if err := s.c.write(ctx, topic, []*franz.Record{rec}); err != nil {
		return fmt.Errorf("kafka: dead-letter: %w", err)
	}
	return nil
}
