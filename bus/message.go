package bus

import (
	"maps"
	"time"

	"github.com/google/uuid"

	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Message is the unit that travels through a broker.
//
// A Message passed to Publish belongs to the publisher until Publish returns;
// Publish may fill in ID and PublishedAt when they are empty. A Message
// received from a Subscription is owned by the receiver.
type Message struct {
	// ID identifies the message. Publish assigns a time-ordered UUID when it
	// is empty. Redeliveries of one message keep its ID, so handlers can use
	// it to detect duplicates.
	ID string
	// Key groups messages that must stay in order (Kafka partition key,
	// per-key ordering in the consumer). It may be empty.
	Key string
	// Headers carry metadata. Keys starting with "omnibus-" are reserved.
	Headers Headers
	// Body is the payload, opaque to omnibus.
	Body []byte
	// PublishedAt is set by Publish when zero. Backends keep nanosecond
	// precision where they can.
	PublishedAt time.Time
	// Attempt is 1 on the first delivery and grows with each redelivery.
	// It is set by the subscriber and ignored by Publish.
	Attempt int
}

// NewMessage returns a message with a fresh ID and the given body.
func NewMessage(body []byte) *Message {
	return &Message{ID: NewID(), Body: body, Headers: Headers{}}
}

// NewID returns a new time-ordered unique identifier (UUID version 7).
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source fails.
		return uuid.NewString()
	}
	return id.String()
}

// Size is the number of bytes the message occupies on the wire, counting
// body, key and headers; backends compare it with their size limits.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.Key) + len(m.ID)
	for k, v := range m.Headers {
		n += len(k) + len(v)
	}
	return n
}

// Clone returns a deep copy of m.
func (m *Message) Clone() *Message {
	c := *m
	c.Headers = maps.Clone(m.Headers)
	if m.Body != nil {
		c.Body = append([]byte(nil), m.Body...)
	}
	return &c
}

// Headers are string key/value metadata of a message.
type Headers map[string]string

// Get returns the value of key, or "" when absent. It is safe on nil Headers.
func (h Headers) Get(key string) string { return h[key] }

// Reserved header keys. Backends carry them like any other header; the
// dead-letter keys are set on messages moved to a dead-letter topic.
const (
	// HeaderTraceParent and HeaderTraceState carry W3C trace context.
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	// HeaderCorrelationID links a message to the request that caused it.
	HeaderCorrelationID = "correlation-id"
	// HeaderTask names the task a message runs (task layer).
	HeaderTask = wire.Task

	// HeaderError is the error of the last failed attempt.
	HeaderError = wire.Error
	// HeaderAttempts is the number of attempts made before dead-lettering.
	HeaderAttempts = wire.Attempts
	// HeaderOriginTopic and HeaderOriginGroup say where a dead-lettered
	// message was consumed.
	HeaderOriginTopic = wire.OriginTopic
	HeaderOriginGroup = wire.OriginGroup
	// HeaderDeadLetteredAt is the RFC 3339 time of dead-lettering.
	HeaderDeadLetteredAt = wire.DeadLetteredAt
)

// MaxHeaderName is the longest header name, in bytes, that every backend
// carries (an AMQP table key is a short string). Publish refuses longer
// names, empty ones, and those that backends use on the wire for a
// message's own fields ("omnibus-id", "omnibus-key",
// "omnibus-published-ns", "omnibus-published-at", "omnibus-attempt",
// "omnibus-due"), with ErrInvalidMessage.
const MaxHeaderName = 255
