package watermill

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/bus"
)

// Publisher hands an omnibus bus.Publisher to watermill code as a
// watermill message.Publisher.
type Publisher struct {
	pub    bus.Publisher
	closed atomic.Bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher that publishes through pub. It does not
// take ownership of pub, which is often a bus.Broker shared with a
// Subscriber: Close leaves pub open.
func NewPublisher(pub bus.Publisher) *Publisher {
	return &Publisher{pub: pub}
}

// Publish converts messages to bus messages and publishes them with one
// call of the bus publisher, so they travel as one batch and Publish
// returns once the broker has taken responsibility for all of them.
//
// Watermill gives each message its own context; the batch is cancelled as
// soon as any of them is done. A message's UUID becomes its ID (an empty
// UUID gets a fresh ID), MetadataKey and MetadataPublishedAt become its
// Key and PublishedAt, and the rest of the metadata its headers.
// MetadataAttempt is dropped: attempts are counted by the broker. The
// messages are not modified.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return bus.ErrClosed
	}
	if len(messages) == 0 {
		return nil
	}
	msgs := make([]*bus.Message, len(messages))
	for i, wm := range messages {
		if wm == nil {
			return fmt.Errorf("%w: message %d is nil", bus.ErrInvalidMessage, i)
		}
		msgs[i] = fromWatermill(wm, false)
	}
	ctx, cancel := batchContext(messages)
	defer cancel()
	return p.pub.Publish(ctx, topic, msgs...)
}

// batchContext returns a context that carries the first message's values
// and is done when any message's context is done.
func batchContext(messages []*message.Message) (context.Context, context.CancelFunc) {
	first := messages[0].Context()
	if len(messages) == 1 {
		return first, func() {}
	}
	ctx, cancel := context.WithCancelCause(first)
	seen := map[<-chan struct{}]bool{first.Done(): true}
	var stops []func() bool
	for _, wm := range messages[1:] {
		mctx := wm.Context()
		done := mctx.Done()
		if done == nil || seen[done] {
			continue
		}
		seen[done] = true
		if mctx.Err() != nil {
			// AfterFunc would cancel in a goroutine of its own, too late
			// for a Publish that starts now.
			cancel(context.Cause(mctx))
			break
		}
		stops = append(stops, context.AfterFunc(mctx, func() { cancel(context.Cause(mctx)) }))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}

// Close makes later calls of Publish fail with bus.ErrClosed. It does not
// close the wrapped bus.Publisher, and it is idempotent.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
