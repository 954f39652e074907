package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

// Handler processes one message. Returning nil acknowledges it. Returning
// an error retries it after a backoff, until its attempts run out and it is
// dead-lettered; wrap the error with NoRetry to dead-letter at once, with
// Drop to discard it, or with RetryAfter to choose the delay.
//
// A Handler must be safe for concurrent use when the consumer's
// Concurrency is above 1. ctx is cancelled when the handler's time limit
// passes or a shutdown gives up waiting for it.
type Handler func(ctx context.Context, m *Message) error

// Middleware wraps a Handler with behaviour such as logging or metrics.
type Middleware func(Handler) Handler

// Outcome errors, matched with errors.Is.
var (
	// ErrNoRetry marks a failure that retrying cannot fix. The message is
	// dead-lettered at once.
	ErrNoRetry = errors.New("bus: do not retry")
	// ErrDrop marks a message to discard: it is acknowledged, not retried
	// and not dead-lettered.
	ErrDrop = errors.New("bus: drop message")
)

type outcome struct {
	err  error
	kind error         // ErrNoRetry, ErrDrop or nil
	wait time.Duration // RetryAfter delay, or -1
}

func (o *outcome) Error() string { return o.err.Error() }
func (o *outcome) Unwrap() []error {
	if o.kind == nil {
		return []error{o.err}
	}
	return []error{o.err, o.kind}
}

// NoRetry wraps err so that the consumer dead-letters the message at once.
// errors.Is(NoRetry(err), ErrNoRetry) and errors.Is(NoRetry(err), err)
// both hold.
func NoRetry(err error) error {
	if err == nil {
		err = ErrNoRetry
	}
	return &outcome{err: err, kind: ErrNoRetry, wait: -1}
}

// Drop wraps err so that the consumer acknowledges and discards the message.
func Drop(err error) error {
	if err == nil {
		err = ErrDrop
	}
	return &outcome{err: err, kind: ErrDrop, wait: -1}
}

// RetryAfter wraps err so that the message is retried after d instead of
// the consumer's backoff (while attempts remain).
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		err = errors.New("bus: retry requested")
	}
	return &outcome{err: err, wait: d}
}

// Postpone returns the error with which a handler puts a message off for
// d without failing it: the message comes back after d, on the same
// attempt number.
func Postpone(d time.Duration) error {
	return &outcome{err: fmt.Errorf("bus: postponed for %v", d), kind: errPostpone, wait: d}
}

var errPostpone = errors.New("bus: postpone")

// RetryDelay returns the delay err asks for with RetryAfter, if any.
func RetryDelay(err error) (time.Duration, bool) {
	var o *outcome
	if errors.As(err, &o) && o.wait >= 0 && o.kind == nil {
		return o.wait, true
	}
	return 0, false
}

// PanicError is the error a handler's panic is turned into.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("bus: handler panicked: %v", e.Value) }

// Backoff returns the delay before the given attempt's retry (attempt is
// the number of the delivery that failed, from 1).
type Backoff func(attempt int) time.Duration

// ExponentialBackoff doubles the delay from initial with each attempt, up
// to max, and picks a random delay in the upper half of that, so that
// failures of many messages at once do not retry in lockstep.
func ExponentialBackoff(initial, max time.Duration) Backoff {
	return func(attempt int) time.Duration {
		d := initial
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		if d > max {
			d = max
		}
		if d <= 1 {
			return d
		}
		half := d / 2
		return half + rand.N(d-half+1)
	}
}

// call runs h, turning a panic into a *PanicError.
func call(ctx context.Context, h Handler, m *Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h(ctx, m)
}
