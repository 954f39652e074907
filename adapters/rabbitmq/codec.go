package rabbitmq

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
)

// Application headers omnibus adds to every message. They are removed from
// bus.Message.Headers on receipt.
const (
	hdrKey       = "omnibus-key"
	hdrPublished = "omnibus-published-ns"
	// hdrAttempt is the attempt number the next delivery of a stored
	// message has; absent means 1.
	hdrAttempt = "omnibus-attempt"
	// RabbitMQ's quorum queues count earlier deliveries here.
	hdrDeliveryCount = "x-delivery-count"
)

// publishing encodes m; attempt is the Attempt of its next delivery.
func publishing(m *bus.Message, attempt int) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+3)
	for k, v := range m.Headers {
		h[k] = v
	}
	if m.Key != "" {
		h[hdrKey] = m.Key
	}
	h[hdrPublished] = m.PublishedAt.UnixNano()
	if attempt > 1 {
		h[hdrAttempt] = int64(attempt)
	}
	return amqp.Publishing{
		Headers:       h,
		ContentType:   m.Headers.Get("content-type"),
		DeliveryMode:  amqp.Persistent,
		CorrelationId: m.Headers.Get(bus.HeaderCorrelationID),
		MessageId:     m.ID,
		Timestamp:     m.PublishedAt,
		Body:          m.Body,
	}
}

// message decodes a delivery. Messages from other producers may lack every
// omnibus header: the ID falls back to a fresh one, the time to the AMQP
// timestamp, non-string header values to their printed form.
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
	for k, v := range d.Headers {
		switch k {
		case hdrKey:
			m.Key = str(v)
		case hdrPublished:
			if ns, ok := integer(v); ok {
				m.PublishedAt = time.Unix(0, ns)
			}
		case hdrAttempt:
			if n, ok := integer(v); ok && n > 0 {
				m.Attempt = int(n)
			}
		case hdrDeliveryCount:
			if n, ok := integer(v); ok {
				delivered = int(n)
			}
		default:
			// Dead-lettering bookkeeping of the retry queues stays with
			// RabbitMQ; a copy in a republished message would confuse it.
			if strings.HasPrefix(k, "x-death") || strings.HasPrefix(k, "x-first-death") || strings.HasPrefix(k, "x-last-death") {
				continue
			}
			m.Headers[k] = str(v)
		}
	}
	if d.CorrelationId != "" && m.Headers[bus.HeaderCorrelationID] == "" {
		m.Headers[bus.HeaderCorrelationID] = d.CorrelationId
	}
	if d.ContentType != "" && m.Headers["content-type"] == "" {
		m.Headers["content-type"] = d.ContentType
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
