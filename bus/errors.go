package bus

import (
	"errors"
	"fmt"
)

// Sentinel errors. Adapters wrap backend errors with these (using %w), so
// callers test for them with errors.Is whatever the backend.
var (
	// ErrClosed is returned by every call on a closed Publisher, Subscriber,
	// Subscription or Delivery whose subscription has been closed.
	ErrClosed = errors.New("bus: closed")
	// ErrBadURL reports a broker URL that cannot be parsed or has invalid
	// parameters.
	ErrBadURL = errors.New("bus: bad broker URL")
	// ErrUnknownScheme reports a URL whose scheme no adapter registered.
	ErrUnknownScheme = errors.New("bus: unknown URL scheme")
	// ErrBadConfig reports invalid configuration values.
	ErrBadConfig = errors.New("bus: invalid configuration")
	// ErrUnreachable reports a broker that could not be reached within the
	// dial timeout.
	ErrUnreachable = errors.New("bus: broker unreachable")
	// ErrAuth reports a broker that refused the credentials.
	ErrAuth = errors.New("bus: authentication failed")
	// ErrForbidden reports a broker that accepted the credentials but
	// refused an operation that the user has no permission for: a RabbitMQ
	// vhost, exchange or queue, a Redis key or command outside the ACL
	// user's rules, a Kafka topic or group without an ACL that allows it.
	// Retrying does not help until the broker's permissions change.
	ErrForbidden = errors.New("bus: permission denied")
	// ErrTooLarge reports a message over the backend's size limit. The
	// concrete error is a *SizeError.
	ErrTooLarge = errors.New("bus: message too large")
	// ErrInvalidMessage reports a message that cannot be published as given
	// (nil, or a header the backend cannot carry: see CheckHeader), or an
	// empty topic name.
	ErrInvalidMessage = errors.New("bus: invalid message")
	// ErrAlreadyAcked is returned by Ack or Nack on a delivery that was
	// already settled.
	ErrAlreadyAcked = errors.New("bus: delivery already acknowledged")
)

// SizeError reports a message over the backend's size limit. It matches
// ErrTooLarge with errors.Is.
type SizeError struct {
	Index int // position of the message in the batch
	Size  int // bytes the message occupies
	Limit int // the backend's limit
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("bus: message %d is %d bytes, over the limit of %d", e.Index, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *SizeError) Is(target error) bool { return target == ErrTooLarge }

// PublishError reports a batch of which only part was confirmed by the
// broker. The messages at the Unconfirmed indexes may or may not have been
// stored; publishing them again is safe for at-least-once consumers.
type PublishError struct {
	Unconfirmed []int
	Err         error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("bus: %d message(s) not confirmed: %v", len(e.Unconfirmed), e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }

// ConfigError collects every problem found in a configuration, so that one
// call reports them all. It matches ErrBadConfig with errors.Is, and each
// problem with errors.Is/As as well.
type ConfigError struct {
	Problems []error
}

func (e *ConfigError) Error() string {
	return "bus: invalid configuration: " + errors.Join(e.Problems...).Error()
}

// Is makes errors.Is(err, ErrBadConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrBadConfig }

func (e *ConfigError) Unwrap() []error { return e.Problems }

// configProblems accumulates configuration problems.
type configProblems []error

func (p *configProblems) addf(format string, args ...any) {
	*p = append(*p, fmt.Errorf(format, args...))
}

func (p configProblems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ConfigError{Problems: p}
}
