// Package bus is omnibus's core: one producer/consumer API over message
// brokers, so the same handler runs on RabbitMQ, Kafka, Redis Streams or the
// in-process memory backend by changing one URL.
//
// A backend is opened from its URL with Open, after importing its adapter
// package for its side effect of registering the scheme:
//
//	import _ "github.com/omnibus-mq/omnibus/adapters/memory"
//
//	b, err := bus.Open(ctx, "mem://")
//
// Publish returns once the broker has taken responsibility for the
// messages. A Consumer runs a Handler over a topic with bounded
// concurrency: a nil result acknowledges the message, an error retries it
// with backoff until its attempts run out and it moves to a dead-letter
// topic with the error, the attempt count and its origin in its headers.
//
// Delivery is at least once: a message whose handler has not succeeded, or
// whose consumer died before acknowledging it, is delivered again. Handlers
// should therefore be idempotent, keyed on Message.ID.
//
// Errors from every backend match the sentinels of this package (ErrClosed,
// ErrBadURL, ErrTooLarge, ...) with errors.Is.
package bus
