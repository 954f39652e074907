package bus

import (
	"context"
	"time"
)

// Publisher sends messages to topics.
//
// Publish returns only when the broker has taken responsibility for every
// message (a publisher confirm, an acks=all produce response, a stream
// append reply). Messages given in one call travel as one batch where the
// backend allows. A batch with an invalid or oversize message is refused
// whole before anything is sent. When the broker confirms only part of a
// batch, the error is a *PublishError naming the unconfirmed messages.
//
// Implementations are safe for concurrent use. Close is idempotent; calls
// after Close return ErrClosed.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...*Message) error
	Close() error
}

// Subscriber opens subscriptions to topics.
//
// Subscribers sharing a group compete for the group's messages (each message
// goes to one of them); every group receives every message published to the
// topic after the group was created.
//
// Implementations are safe for concurrent use. Close closes every
// subscription the subscriber opened (their unacknowledged deliveries go
// back to the broker) and is idempotent.
type Subscriber interface {
	Subscribe(ctx context.Context, topic string, opts SubscribeOptions) (Subscription, error)
	Close() error
}

// Broker is a connection to a backend that can both publish and subscribe.
// bus.Open returns one.
type Broker interface {
	Publisher
	Subscriber
}

// Shutdowner is implemented by publishers, subscribers and brokers whose
// closing can be bounded: Shutdown stops new calls, lets those under way
// finish, closes the subscriptions (what they hold goes back to the
// broker) and then the connection, giving up on what is left when ctx
// ends. Every backend of this module implements it; Close is Shutdown
// bounded only by the backend's own timeouts.
type Shutdowner interface {
	Shutdown(ctx context.Context) error
}

// Shutdown shuts c down within ctx when it is a Shutdowner, and closes it
// otherwise.
func Shutdown(ctx context.Context, c interface{ Close() error }) error {
	if s, ok := c.(Shutdowner); ok {
		return s.Shutdown(ctx)
	}
	return c.Close()
}

// Subscription is a stream of deliveries for one topic and group.
//
// Receive blocks until a delivery is available, ctx is done, or the
// subscription is closed (then it returns ErrClosed). It is safe to call
// from many goroutines; at most SubscribeOptions.Prefetch deliveries are
// unsettled at once, and Receive waits while that many are.
//
// Close stops intake and gives every unsettled delivery back to the broker
// for redelivery; settling a delivery after Close returns ErrClosed.
// Close is idempotent.
type Subscription interface {
	Receive(ctx context.Context) (Delivery, error)
	Close() error
}

// Delivery is one receipt of a message. It must be settled exactly once,
// with Ack or Nack; a second settlement returns ErrAlreadyAcked.
type Delivery interface {
	// Message returns the delivered message; its Attempt field says which
	// delivery of the message this is.
	Message() *Message
	// Ack tells the broker the message was processed.
	Ack(ctx context.Context) error
	// Nack tells the broker the message failed. It is delivered again after
	// opts.Delay (where the backend supports delays), or moved to the
	// dead-letter topic when opts.DeadLetter is set or the delivery was the
	// last of SubscribeOptions.MaxAttempts.
	//
	// When Ack or Nack fails, the delivery still counts as settled (a
	// second call returns ErrAlreadyAcked): the broker did not take the
	// settlement, and delivers the message again.
	Nack(ctx context.Context, opts NackOptions) error
}

// NackOptions say what happens to a failed delivery.
type NackOptions struct {
	// Delay before the message is delivered again. Zero redelivers at once.
	Delay time.Duration
	// Reason is recorded in the HeaderError header when the message is
	// dead-lettered.
	Reason error
	// DeadLetter skips the remaining attempts: the message goes to the
	// dead-letter topic at once. It wins over Postpone: a Nack with both
	// dead-letters, and Delay is ignored.
	DeadLetter bool
	// Postpone says the delivery did not fail: the message comes back
	// after Delay and the delivery does not count as an attempt, so a
	// message can wait for its time (a task's countdown) without using up
	// its attempts or being dead-lettered.
	Postpone bool
}

// DeadLetterTopic is the dead-letter topic of topic when
// SubscribeOptions.DeadLetterTopic is empty: "<topic>.dlq".
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// DefaultGroup is the group used when SubscribeOptions.Group is empty.
const DefaultGroup = "default"

// DefaultMaxAttempts is the number of deliveries before dead-lettering when
// SubscribeOptions.MaxAttempts is zero.
const DefaultMaxAttempts = 5

// SubscribeOptions configure a subscription. The zero value is valid.
type SubscribeOptions struct {
	// Group names the consumer group. Default DefaultGroup.
	Group string
	// Prefetch is the most unsettled deliveries the subscription holds.
	// Default 1.
	Prefetch int
	// MaxAttempts is how many times a message is delivered before a Nack
	// moves it to the dead-letter topic. Default DefaultMaxAttempts; a
	// negative value means no limit.
	MaxAttempts int
	// DeadLetterTopic receives messages that ran out of attempts, or that
	// a Nack dead-lettered. Default DeadLetterTopic(topic).
	DeadLetterTopic string
}

// Features describe what a backend guarantees; the conformance suite reads
// them, and callers may too.
type Features struct {
	// OrderedPerKey: messages with the same key are delivered in publish
	// order to a group with a single consumer and prefetch 1.
	OrderedPerKey bool
	// Persistent: accepted messages survive a broker restart.
	Persistent bool
	// NackDelay: Nack honours NackOptions.Delay.
	NackDelay bool
	// MaxMessageSize is the largest Message.Size the backend accepts;
	// zero means no limit.
	MaxMessageSize int
}

// FeatureReporter is implemented by backends that describe themselves.
type FeatureReporter interface {
	Features() Features
}
