package rabbitmq

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Application headers omnibus adds to every message. They are removed from
// bus.Message.Headers on receipt.
const (
	hdrKey       = wire.Key
	hdrPublished = wire.Published
	// hdrAttempt is the attempt number the next delivery of a stored
	// message has; absent means 1.
	hdrAttempt = wire.Attempt
	// RabbitMQ's quorum queues count earlier deliveries here.
	hdrDeliveryCount = "x-delivery-count"
	// hdrTyped lists, comma-separated, the bus headers whose values are
	// JSON text for typed AMQP values (Celery's retries, timelimit, eta).
	// It never travels itself: publish turns the listed values back into
	// AMQP types, and receipt rebuilds the list. The celery package uses
	// the same name.
	hdrTyped = wire.Typed

	hdrContentType     = "content-type"
	hdrContentEncoding = "content-encoding"
)

// maxHeaderFrame bounds the AMQP properties of one message, headers
// included. They travel in a single content-header frame, which cannot be
// split: RabbitMQ closes the whole connection (frame_too_large) on one over
// its frame_max, 128 KiB by default. The bound leaves room for the frame's
// fixed fields and for typed values, which may encode longer than their
// JSON text.
const maxHeaderFrame = 120 << 10

// headerFrameSize estimates from above the bytes m's properties take in a
// content-header frame.
func headerFrameSize(m *bus.Message) int {
	n := 64 + len(m.ID) + len(m.Key) // fixed fields, message-id, omnibus-key
	for k, v := range m.Headers {
		n += 1 + len(k) + 1 + 4 + len(v) + 8
	}
	// content-type, content-encoding and correlation-id travel twice:
	// as properties and as headers.
	n += len(m.Headers[hdrContentType]) + len(m.Headers[hdrContentEncoding]) + len(m.Headers[bus.HeaderCorrelationID])
	return n
}

// checkHeaderFrame refuses, with bus.ErrInvalidMessage, a batch with a
// message whose properties would not fit in one frame.
func checkHeaderFrame(msgs []*bus.Message) error {
	for i, m := range msgs {
		if n := headerFrameSize(m); n > maxHeaderFrame {
			return fmt.Errorf("%w: message %d: headers take about %d bytes, over the %d that fit in one AMQP frame",
				bus.ErrInvalidMessage, i, n, maxHeaderFrame)
		}
	}
	return nil
}

// publishing encodes m; attempt is the Attempt of its next delivery.
func publishing(m *bus.Message, attempt int) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+3)
	typed := typedNames(m.Headers[hdrTyped])
	for k, v := range m.Headers {
		switch {
		case k == hdrTyped:
		case typed[k]:
			h[k] = fromJSON(v)
		default:
			h[k] = v
		}
	}
	if m.Key != "" {
		h[hdrKey] = m.Key
	}
	h[hdrPublished] = m.PublishedAt.UnixNano()
	if attempt > 1 {
		h[hdrAttempt] = int64(attempt)
	}
	return amqp.Publishing{
		Headers:         h,
		ContentType:     m.Headers.Get(hdrContentType),
		ContentEncoding: m.Headers.Get(hdrContentEncoding),
		DeliveryMode:    amqp.Persistent,
		CorrelationId:   m.Headers.Get(bus.HeaderCorrelationID),
		MessageId:       m.ID,
		Timestamp:       m.PublishedAt,
		Body:            m.Body,
	}
}

// message decodes a delivery. Messages from other producers may lack every
// omnibus header: the ID falls back to a fresh one, the time to the AMQP
// timestamp. Header values other than strings become JSON text, named in
// hdrTyped so that a republished copy carries them typed again.
func message(d *amqp.Delivery) *bus.Message {
	m := &bus.Message{
		ID:          d.MessageId,
		Body:        d.Body,
		Headers:     make(bus.Headers, len(d.Headers)),
		PublishedAt: d.Timestamp,
		Attempt:     1,
	}
	if m.ID == "" {
		m.ID = bus.NewID()
	}
	delivered := 0
	var typed []string
	for k, v := range d.Headers {
		switch k {
		case hdrKey:
			m.Key = str(v)
		case hdrPublished, wire.PublishedOld:
			if ns, ok := integer(v); ok {
				m.PublishedAt = time.Unix(0, ns)
			}
		case hdrAttempt:
			// Counts are capped so that their sum cannot overflow.
			if n, ok := integer(v); ok && n > 0 {
				m.Attempt = int(min(n, math.MaxInt32))
			}
		case hdrDeliveryCount:
			if n, ok := integer(v); ok {
				delivered = int(min(n, math.MaxInt32))
			}
		default:
			// Headers Publish would refuse (empty or too long names,
			// names of message fields) come only from other producers.
			if driver.CheckHeader(k) != nil {
				continue
			}
			// Dead-lettering bookkeeping of the retry queues stays with
			// RabbitMQ; a copy in a republished message would confuse it.
			if strings.HasPrefix(k, "x-death") || strings.HasPrefix(k, "x-first-death") || strings.HasPrefix(k, "x-last-death") {
				continue
			}
			if s, ok := text(v); ok {
				m.Headers[k] = s
				continue
			}
			b, err := json.Marshal(jsonable(v))
			if err != nil {
				m.Headers[k] = str(v)
				continue
			}
			m.Headers[k] = string(b)
			typed = append(typed, k)
		}
	}
	if len(typed) > 0 {
		slices.Sort(typed)
		m.Headers[hdrTyped] = strings.Join(typed, ",")
	} else {
		// Only this codec may claim header values are typed.
		delete(m.Headers, hdrTyped)
	}
	if d.CorrelationId != "" && m.Headers[bus.HeaderCorrelationID] == "" {
		m.Headers[bus.HeaderCorrelationID] = d.CorrelationId
	}
	if d.ContentType != "" && m.Headers[hdrContentType] == "" {
		m.Headers[hdrContentType] = d.ContentType
	}
	if d.ContentEncoding != "" && m.Headers[hdrContentEncoding] == "" {
		m.Headers[hdrContentEncoding] = d.ContentEncoding
	}
	// A quorum queue counts earlier deliveries; a classic queue only says
	// whether there was one.
	switch {
	case delivered > 0:
		m.Attempt += delivered
	case d.Redelivered:
		m.Attempt++
	}
	return m
}

// text returns the header values that travel as bus strings unchanged.
func text(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// jsonable turns an AMQP value into one encoding/json writes faithfully:
// byte strings inside tables and arrays become text.
func jsonable(v any) any {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case amqp.Table:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonable(e)
		}
		return out
	}
	return v
}

func typedNames(list string) map[string]bool {
	if list == "" {
		return nil
	}
	names := map[string]bool{}
	for n := range strings.SplitSeq(list, ",") {
		names[strings.TrimSpace(n)] = true
	}
	return names
}

// fromJSON turns JSON text back into an AMQP value: integers to int64,
// other numbers to float64, objects to tables. Text that is not JSON
// travels as the string it is.
func fromJSON(s string) any {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return s
	}
	return amqpValue(v)
}

func amqpValue(v any) any {
	switch v := v.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		t := make(amqp.Table, len(v))
		for k, e := range v {
			t[k] = amqpValue(e)
		}
		return t
	case []any:
		for i, e := range v {
			v[i] = amqpValue(e)
		}
		return v
	}
	return v
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func integer(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int:
		return int64(v), true
	case int16:
		return int64(v), true
	case uint8:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}
