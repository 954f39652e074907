package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// CheckHeader returns why a header name cannot be published, or nil. A
// name is invalid when it is empty, longer than bus.MaxHeaderName bytes,
// or one that backends use on the wire for a message's own fields
// ("omnibus-id", "omnibus-key", "omnibus-published-ns",
// "omnibus-published-at", "omnibus-attempt", "omnibus-due"). Header values
// may be any bytes; their size counts towards the message size limit.
//
// Publish refuses such headers. Adapters call CheckHeader on receipt to
// drop the headers of that kind that other clients wrote.
func CheckHeader(name string) error {
	switch {
	case name == "":
		return errors.New("empty header name")
	case len(name) > bus.MaxHeaderName:
		return fmt.Errorf("header name of %d bytes, over %d", len(name), bus.MaxHeaderName)
	case wire.IsField(name):
		return fmt.Errorf("header %q is reserved for a message field", name)
	}
	return nil
}

// checkCall returns the error every Publish and Subscribe starts with.
func checkCall(ctx context.Context, topic string) error {
	if topic == "" {
		return fmt.Errorf("%w: empty topic name", bus.ErrInvalidMessage)
	}
	return ctx.Err()
}

// Prepare validates a batch before it is published and fills in the
// fields Publish assigns (ID, PublishedAt); the portable Broker calls it
// before Driver.Send, and clients outside the driver layer (a benchmark's
// raw client) may too. A batch is refused whole,
// before anything is sent, when any message in it is nil or has a header
// CheckHeader refuses (bus.ErrInvalidMessage), or is larger than maxSize
// bytes (a *bus.SizeError; maxSize <= 0 means no limit).
func Prepare(msgs []*bus.Message, maxSize int) error {
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("%w: message %d is nil", bus.ErrInvalidMessage, i)
		}
		for k := range m.Headers {
			if err := CheckHeader(k); err != nil {
				return fmt.Errorf("%w: message %d: %v", bus.ErrInvalidMessage, i, err)
			}
		}
		if maxSize > 0 {
			if n := m.Size(); n > maxSize {
				return &bus.SizeError{Index: i, Size: n, Limit: maxSize}
			}
		}
	}
	now := time.Now()
	for _, m := range msgs {
		if m.ID == "" {
			m.ID = bus.NewID()
		}
		if m.PublishedAt.IsZero() {
			m.PublishedAt = now
		}
	}
	return nil
}

// Defaults returns opts with every zero field set to its default: group
// bus.DefaultGroup, prefetch 1, bus.DefaultMaxAttempts attempts, and the
// dead-letter topic bus.DeadLetterTopic(topic). The portable Broker
// applies it before it calls Driver.Subscribe.
func Defaults(topic string, opts bus.SubscribeOptions) bus.SubscribeOptions {
	if opts.Group == "" {
		opts.Group = bus.DefaultGroup
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 1
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = bus.DefaultMaxAttempts
	}
	if opts.DeadLetterTopic == "" {
		opts.DeadLetterTopic = bus.DeadLetterTopic(topic)
	}
	return opts
}

// checkSubscribe reports the problems of subscribe options before their
// defaults are applied.
func checkSubscribe(topic string, opts bus.SubscribeOptions) error {
	var p []error
	if opts.Prefetch < 0 {
		p = append(p, fmt.Errorf("prefetch %d is negative", opts.Prefetch))
	}
	if opts.DeadLetterTopic != "" && opts.DeadLetterTopic == topic {
		p = append(p, fmt.Errorf("dead-letter topic %q is the topic itself", topic))
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// exhausted reports whether a failed delivery with the given attempt
// number has used up the attempts opts allow.
func exhausted(opts bus.SubscribeOptions, attempt int) bool {
	return opts.MaxAttempts > 0 && attempt >= opts.MaxAttempts
}

// deadLetter returns the copy of m stored in the dead-letter topic: the
// same ID, key and body, with the reason, the attempt count and the origin
// in its headers. Headers that Publish would refuse (another producer's)
// are dropped so that they cannot keep it from its dead-letter topic.
func deadLetter(m *bus.Message, topic, group string, reason error, attempts int, at time.Time) *bus.Message {
	d := m.Clone()
	if d.Headers == nil {
		d.Headers = bus.Headers{}
	}
	for k := range d.Headers {
		if CheckHeader(k) != nil {
			delete(d.Headers, k)
		}
	}
	msg := "nack"
	if reason != nil {
		msg = reason.Error()
	}
	d.Headers[bus.HeaderError] = msg
	d.Headers[bus.HeaderAttempts] = strconv.Itoa(attempts)
	d.Headers[bus.HeaderOriginTopic] = topic
	d.Headers[bus.HeaderOriginGroup] = group
	d.Headers[bus.HeaderDeadLetteredAt] = at.UTC().Format(time.RFC3339Nano)
	d.Attempt = 0
	return d
}
