package watermill

import (
	"bytes"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Reserved watermill metadata keys that carry the bus.Message fields
// watermill has no place for. Every other metadata entry maps one to one to
// a bus.Message header, and Message.ID maps to the watermill UUID.
const (
	// MetadataKey carries Message.Key. It is absent when the key is empty.
	MetadataKey = wire.Key
	// MetadataPublishedAt carries Message.PublishedAt as decimal nanoseconds
	// since the Unix epoch.
	MetadataPublishedAt = wire.Published
	// MetadataAttempt carries Message.Attempt on messages the Subscriber
	// hands to watermill code. It is written only on delivery and never
	// read back: a watermill handler that copies a consumed message's
	// metadata into a new one would otherwise start the new message with a
	// stale attempt count.
	MetadataAttempt = wire.Attempt
)

// toWatermill converts m for a watermill Publish. The body is copied
// because the bus contract hands it back to the caller when Publish
// returns, while some watermill publishers (gochannel among them) keep the
// payload for later deliveries.
func toWatermill(m *bus.Message) *message.Message {
	wm := message.NewMessage(m.ID, bytes.Clone(m.Body))
	for k, v := range m.Headers {
		wm.Metadata[k] = v
	}
	delete(wm.Metadata, MetadataAttempt)
	if m.Key != "" {
		wm.Metadata[MetadataKey] = m.Key
	} else {
		delete(wm.Metadata, MetadataKey)
	}
	if !m.PublishedAt.IsZero() {
		wm.Metadata[MetadataPublishedAt] = strconv.FormatInt(m.PublishedAt.UnixNano(), 10)
	} else {
		delete(wm.Metadata, MetadataPublishedAt)
	}
	return wm
}

// fromWatermill converts a watermill message to a bus.Message, leaving
// Attempt zero. copyBody is set for received messages, which the bus
// receiver owns and may change, while the wrapped pub/sub may still hold
// the payload for a redelivery.
func fromWatermill(wm *message.Message, copyBody bool) *bus.Message {
	m := &bus.Message{ID: wm.UUID, Body: wm.Payload, Headers: make(bus.Headers, len(wm.Metadata))}
	if copyBody {
		m.Body = bytes.Clone(wm.Payload)
	}
	for k, v := range wm.Metadata {
		switch k {
		case MetadataKey:
			m.Key = v
		case MetadataPublishedAt, wire.PublishedOld:
			if t, ok := wire.ParseTime(v); ok {
				m.PublishedAt = t
			}
		case MetadataAttempt:
		default:
			m.Headers[k] = v
		}
	}
	return m
}

// deliveryToWatermill converts a received bus message for watermill code,
// recording its attempt number in the metadata.
func deliveryToWatermill(m *bus.Message) *message.Message {
	wm := message.NewMessage(m.ID, m.Body)
	for k, v := range m.Headers {
		wm.Metadata[k] = v
	}
	if m.Key != "" {
		wm.Metadata[MetadataKey] = m.Key
	}
	if !m.PublishedAt.IsZero() {
		wm.Metadata[MetadataPublishedAt] = strconv.FormatInt(m.PublishedAt.UnixNano(), 10)
	}
	wm.Metadata[MetadataAttempt] = strconv.Itoa(m.Attempt)
	return wm
}
