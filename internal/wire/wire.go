// Package wire is the one home of the names omnibus writes on the wire:
// the headers and properties that carry a message's own fields, the
// bookkeeping of retries, and the headers of dead letters and tasks. Every
// adapter and the celery package take their names from here, so that a
// message written by one backend's code reads the same in another's.
//
// Readers accept the older spellings listed here as well, so that messages
// already stored in queues still decode.
package wire

import (
	"strconv"
	"time"
)

// Names that carry a message's own fields.
const (
	// ID carries bus.Message.ID where the broker has no message-id field
	// of its own.
	ID = "omnibus-id"
	// Key carries bus.Message.Key where the broker has no key field.
	Key = "omnibus-key"
	// Published carries bus.Message.PublishedAt as decimal Unix
	// nanoseconds.
	Published = "omnibus-published-ns"
	// PublishedOld is the name Published had on RocketMQ and in watermill
	// metadata; readers accept it, writers no longer use it.
	PublishedOld = "omnibus-published-at"
	// Attempt is the attempt number of a stored message's next delivery;
	// absent means 1.
	Attempt = "omnibus-attempt"
	// Due is the Unix millisecond time before which a retry stored in a
	// retry topic must not be delivered.
	Due = "omnibus-due"
	// Typed lists, comma-separated, the headers whose values are JSON text
	// standing for typed values (AMQP tables, Celery's retries and
	// timelimit). The RabbitMQ and kombu adapters turn them back into
	// typed values on the wire; the name itself never travels there.
	Typed = "omnibus-typed-headers"
)

// Headers of dead letters, set by the driver layer on the copy it stores
// in a dead-letter topic.
const (
	Error          = "omnibus-error"
	Attempts       = "omnibus-attempts"
	OriginTopic    = "omnibus-origin-topic"
	OriginGroup    = "omnibus-origin-group"
	DeadLetteredAt = "omnibus-dead-lettered-at"
)

// Headers of the task layer.
const (
	Task     = "omnibus-task"
	ETA      = "omnibus-eta"
	Expires  = "omnibus-expires"
	Priority = "omnibus-priority"
)

// Fields are the names a header may not have, because a backend uses them
// for a message's own fields or its retry bookkeeping: a header of such a
// name would be taken for the field on receipt, or dropped.
var Fields = []string{ID, Key, Published, PublishedOld, Attempt, Due}

var fields = func() map[string]bool {
	m := make(map[string]bool, len(Fields))
	for _, f := range Fields {
		m[f] = true
	}
	return m
}()

// IsField reports whether name is one of Fields.
func IsField(name string) bool { return fields[name] }

// FormatTime encodes t as Published carries it.
func FormatTime(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

// AppendTime appends the encoding of FormatTime to b.
func AppendTime(b []byte, t time.Time) []byte { return strconv.AppendInt(b, t.UnixNano(), 10) }

// ParseTime decodes a Published value; ok is false when v is not one.
func ParseTime(v string) (t time.Time, ok bool) {
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// IsPublished reports whether name carries the publish time, in either
// spelling.
func IsPublished(name string) bool { return name == Published || name == PublishedOld }
