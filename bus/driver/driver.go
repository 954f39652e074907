package driver

import (
	"context"
	"errors"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Driver is one connection to a broker, as an adapter implements it. The
// portable Broker (see New) calls it; users never do.
//
// The portable side has already checked every call: the connection is
// open, the topic name is not empty, the context is not done, the
// messages are valid, within Features().MaxMessageSize and have their ID
// and PublishedAt set, and the subscribe options have their defaults. A
// Driver checks only what is its broker's (topic name rules, say).
//
// Methods may be called concurrently, except Close, which is called once,
// after every Send and Subscribe has returned and every subscription has
// been closed, or sooner when the context of Broker.Shutdown ends first.
type Driver interface {
	// Send stores msgs (at least one) in topic and returns once the
	// broker has taken responsibility for them. When the broker took only
	// part of them, the error is a *bus.PublishError naming the others.
	Send(ctx context.Context, topic string, msgs []*bus.Message) error
	// Subscribe joins opts.Group on topic. It returns once the
	// subscription is ready to receive, or with an error; ctx bounds the
	// call, not the subscription.
	Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (Subscription, error)
	// Features describes what the backend guarantees.
	Features() bus.Features
	// Close releases the connection. ctx bounds the work it does on the
	// way (flushing, leaving groups); when ctx ends, Close gives up on it
	// and releases what it holds at once.
	Close(ctx context.Context) error
}

// Subscription is one consumer's share of a group, as a driver implements
// it. The portable subscription keeps its window full with Receive, hands
// the deliveries out, settles them and gives the rest back at Close.
//
// Receive is called from one goroutine at a time; the deliveries' methods
// from any goroutine.
type Subscription interface {
	// Receive waits until at least one delivery is available and returns
	// up to max (at least 1) of them. It returns when ctx ends, promptly,
	// with ctx's error; deliveries it took from the broker by then are
	// returned with the error, so that Close can give them back.
	//
	// A failure that may pass (a lost connection, a broker restarting) is
	// returned as it is: the portable side logs it and calls Receive again
	// after a pause. Wrap one that will not pass by itself with Lasting so
	// that Receive's callers see it too. An error matching bus.ErrClosed
	// ends the subscription: the broker or the client went away for good.
	Receive(ctx context.Context, max int) ([]Delivery, error)
	// Close ends the subscription, once, after Receive has returned for
	// the last time and every settlement under way has finished.
	// unhanded are deliveries Receive returned that never reached a user:
	// give them back as if they had never been delivered, where the
	// broker allows. unsettled reached a user and were not settled: give
	// them back for redelivery, counted as an attempt. ctx bounds the work.
	Close(ctx context.Context, unhanded, unsettled []Delivery) error
}

// Delivery is one receipt of a message, as a driver implements it. The
// portable side makes sure that exactly one of Ack, Retry and DeadLetter
// is called, at most once, and never after the subscription's Close has
// begun.
//
// A settlement that fails must not lose the message: if the broker did not
// take it, the message is delivered again (after a visibility timeout, a
// rebalance, or at once from the client's own memory). The portable side
// counts a delivery settled once its settlement has been tried, whatever
// the outcome, and returns the error to the caller.
type Delivery interface {
	// Message returns the delivered message with its Attempt set: 1 on
	// the first delivery, counting on through retries and redeliveries
	// as far as the broker tells.
	Message() *bus.Message
	// Ack tells the broker the message was processed.
	Ack(ctx context.Context) error
	// Retry gives the message back to be delivered again after delay
	// (zero: at once), as a delivery numbered attempts+1. Retry with
	// attempts equal to the message's Attempt is a failure; with one
	// fewer it is a postponement that used up nothing.
	Retry(ctx context.Context, delay time.Duration, attempts int) error
	// DeadLetter stores dead, the copy of the message that the portable
	// side built with the dead-letter headers, in topic, and settles the
	// delivery: both in one step where the broker allows, else storing
	// first, so that a crash in between delivers the message again
	// rather than losing it.
	DeadLetter(ctx context.Context, topic string, dead *bus.Message) error
}

// HandOff is implemented by deliveries that must know when they reach a
// user, or that the broker may take back while they wait in the portable
// subscription's buffer (a lease that lapsed, a partition that moved to
// another member).
type HandOff interface {
	// HandOff is called just before the delivery is handed to a caller
	// of Receive. When it returns false the delivery was taken back: it
	// is dropped, never settled and not passed to Close.
	HandOff() bool
}

// Malformed is implemented by deliveries of stored entries that are not
// messages this backend can read (another client's garbage in a shared
// queue). When Malformed returns an error, the delivery is dead-lettered
// with it as the reason and never handed out.
type Malformed interface {
	Malformed() error
}

// Lasting marks a failure of Receive that will not pass by itself, such as
// refused credentials or a topic that does not exist: besides being
// logged and retried, it is returned to the next caller of the
// subscription's Receive. Failures matching bus.ErrAuth, bus.ErrForbidden
// or bus.ErrBadConfig are lasting without the mark.
func Lasting(err error) error {
	if err == nil {
		return nil
	}
	return &lastingError{err}
}

type lastingError struct{ err error }

func (e *lastingError) Error() string { return e.err.Error() }
func (e *lastingError) Unwrap() error { return e.err }

// IsLasting reports whether a failure of Receive will not pass by itself:
// it was marked with Lasting, or matches bus.ErrAuth, bus.ErrForbidden or
// bus.ErrBadConfig.
func IsLasting(err error) bool {
	var l *lastingError
	return errors.As(err, &l) || errors.Is(err, bus.ErrAuth) || errors.Is(err, bus.ErrForbidden) || errors.Is(err, bus.ErrBadConfig)
}

// FromChannel is Subscription.Receive for a driver whose client hands it
// messages on a channel: it waits for the first value of ch and then
// takes, without waiting, what else is ready there, up to max values,
// each made a Delivery by take. closed reports that ch was closed; the
// deliveries taken before are returned with it.
func FromChannel[T any](ctx context.Context, ch <-chan T, max int, take func(T) Delivery) (ds []Delivery, closed bool, err error) {
	select {
	case v, ok := <-ch:
		if !ok {
			return nil, true, nil
		}
		ds = append(ds, take(v))
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	for len(ds) < max {
		select {
		case v, ok := <-ch:
			if !ok {
				return ds, true, nil
			}
			ds = append(ds, take(v))
		default:
			return ds, false, nil
		}
	}
	return ds, false, nil
}
