package kafka

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Record headers this package writes besides the message's own headers.
// Received messages have them removed from bus.Message.Headers.
const (
	// HeaderID carries bus.Message.ID.
	HeaderID = wire.ID
	// HeaderPublishedAt carries bus.Message.PublishedAt in Unix
	// nanoseconds, because a Kafka record timestamp has milliseconds only.
	// Records without it get PublishedAt from the record timestamp.
	HeaderPublishedAt = wire.Published
	// HeaderAttempt is the delivery number of a record in a retry topic.
	HeaderAttempt = wire.Attempt
	// HeaderDue is when a record in a retry topic is due, in Unix
	// milliseconds.
	HeaderDue = wire.Due
)

// maxErrorHeader bounds the error text kept in a dead letter, so that a
// long error cannot push the record over the broker's size limit.
const maxErrorHeader = 1 << 10

// encode turns m into a record for topic. A non-zero attempt and due mark
// a record for a retry topic. Record timestamps are the write time, so
// that retention counts from when a record was written, not from when its
// message was first published.
func encode(topic string, m *bus.Message, attempt int, due time.Time) *franz.Record {
	r := new(franz.Record)
	encodeInto(r, topic, m, attempt, due, time.Now())
	return r
}

// encodeInto is encode writing into r, with now as the record timestamp.
func encodeInto(r *franz.Record, topic string, m *bus.Message, attempt int, due, now time.Time) {
	h := make([]franz.RecordHeader, 0, len(m.Headers)+4)
	for k, v := range m.Headers {
		switch k {
		case HeaderID, HeaderPublishedAt, HeaderAttempt, HeaderDue:
			continue
		case bus.HeaderError:
			if len(v) > maxErrorHeader {
				cut := maxErrorHeader
				for cut > 0 && !utf8.RuneStart(v[cut]) {
					cut--
				}
				v = v[:cut] + "..."
			}
		}
		h = append(h, franz.RecordHeader{Key: k, Value: []byte(v)})
	}
	// One buffer holds the values of this package's headers.
	b := make([]byte, 0, len(m.ID)+20+len(m.Key))
	b = append(b, m.ID...)
	b = strconv.AppendInt(b, m.PublishedAt.UnixNano(), 10)
	id, published := len(m.ID), len(b)
	h = append(h,
		franz.RecordHeader{Key: HeaderID, Value: b[:id:id]},
		franz.RecordHeader{Key: HeaderPublishedAt, Value: b[id:published:published]})
	if attempt > 0 {
		h = append(h,
			franz.RecordHeader{Key: HeaderAttempt, Value: strconv.AppendInt(nil, int64(attempt), 10)},
			franz.RecordHeader{Key: HeaderDue, Value: strconv.AppendInt(nil, due.UnixMilli(), 10)})
	}
	*r = franz.Record{Topic: topic, Value: m.Body, Headers: h, Timestamp: now}
	if m.Key != "" {
		b = append(b, m.Key...)
		r.Key = b[published:len(b):len(b)]
	}
}

// decode turns a fetched record into a message. attempt is the record's
// HeaderAttempt (0 when absent) and due its HeaderDue (zero when absent).
func decode(r *franz.Record) (m *bus.Message, attempt int, due time.Time) {
	own := 0
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderID, HeaderPublishedAt, wire.PublishedOld, HeaderAttempt, HeaderDue:
			own++
		}
	}
	m = &bus.Message{Key: string(r.Key), Body: r.Value, Headers: make(bus.Headers, len(r.Headers)-own)}
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderID:
			m.ID = string(h.Value)
		case HeaderPublishedAt, wire.PublishedOld:
			if t, ok := wire.ParseTime(string(h.Value)); ok {
				m.PublishedAt = t
			}
		case HeaderAttempt:
			if n, err := strconv.Atoi(string(h.Value)); err == nil && n > 0 {
				attempt = n
			}
		case HeaderDue:
			if ms, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				due = time.UnixMilli(ms)
			}
		default:
			// Headers Publish would refuse (empty or too long names,
			// names of message fields) come only from other producers.
			if driver.CheckHeader(h.Key) == nil {
				m.Headers[h.Key] = string(h.Value)
			}
		}
	}
	if m.ID == "" {
		// A record from another producer: its position is a stable ID
		// that redeliveries share.
		m.ID = fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
	}
	if m.PublishedAt.IsZero() {
		m.PublishedAt = r.Timestamp
	}
	return m, attempt, due
}
