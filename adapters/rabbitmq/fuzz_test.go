package rabbitmq

import (
	"bytes"
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/badinput"
)

// FuzzParseURL: parsing any amqp:// URL never panics, fails with
// bus.ErrBadURL, and never shows the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"amqp://guest:guest@127.0.0.1:5672/", "amqps://u:p@h/vhost?topology=queue&queue_type=quorum",
		"amqp://h/?max_message_size=-1&publish_channels=x&confirm_window=0&dial_timeout=1h&no_default_group=yes",
		"amqp://h/?heartbeat=10&connection_name=%00", "amqp://u:" + badinput.Marker + "/x@h/?topology=star",
		"amqp://u:pw12345@h:99999/?dial_timeout=-1s", "amqp:opaque?x=1", "amqp://h/?topology=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := bus.ParseURL(raw)
		if err != nil {
			badinput.CheckURLError(t, raw, err)
			return
		}
		u.Scheme = "amqp"
		o, err := ParseURL(u)
		if err != nil {
			badinput.CheckURLError(t, raw, err)
			if !errors.Is(err, bus.ErrBadURL) {
				t.Fatalf("%q: %v, want ErrBadURL", raw, err)
			}
			return
		}
		if verr := o.Validate(); verr != nil {
			t.Fatalf("%q parsed into options that do not validate: %v", raw, verr)
		}
	})
}

// value builds an AMQP field value of the kind kind selects from the
// fuzzer's text and number.
func value(kind byte, s string, n int64) any {
	switch kind % 12 {
	case 0:
		return s
	case 1:
		return []byte(s)
	case 2:
		return n
	case 3:
		return int32(n)
	case 4:
		return int16(n)
	case 5:
		return uint8(n)
	case 6:
		return math.Float64frombits(uint64(n))
	case 7:
		return n%2 == 0
	case 8:
		return amqp.Table{s: n, "nested": []any{s, n}}
	case 9:
		return []any{s, []byte(s), nil}
	case 10:
		return time.Unix(n%(1<<40), 0)
	}
	return nil
}

// FuzzDecode: a delivery from any producer, with any header names, types
// and values, decodes without panicking into a message that has an ID, an
// attempt of at least 1, and only headers that Publish accepts, so that it
// can be republished or dead-lettered.
func FuzzDecode(f *testing.F) {
	f.Add("omnibus-attempt", byte(2), "x", int64(math.MaxInt64), "x-delivery-count", byte(2), int64(math.MaxInt64), true, "", []byte("body"))
	f.Add("omnibus-published-ns", byte(0), "garbage", int64(-1), "omnibus-key", byte(8), int64(3), false, "id", []byte{0xff})
	f.Add("", byte(1), "\xff", int64(0), "omnibus-typed-headers", byte(0), int64(0), true, "", []byte(nil))
	f.Add("x-death", byte(9), "q", int64(1), "omnibus-attempt", byte(0), int64(0), false, "m", []byte("{"))
	f.Fuzz(func(t *testing.T, k1 string, kind1 byte, s string, n int64, k2 string, kind2 byte, n2 int64, redelivered bool, id string, body []byte) {
		d := &amqp.Delivery{
			MessageId:   id,
			Redelivered: redelivered,
			Body:        body,
			Headers:     amqp.Table{k1: value(kind1, s, n), k2: value(kind2, s, n2), "omnibus-id": s, "": s},
		}
		m := message(d)
		if m.ID == "" || m.Attempt < 1 || !bytes.Equal(m.Body, body) {
			t.Fatalf("decoded %+v from %+v", m, d)
		}
		for k := range m.Headers {
			if err := driver.CheckHeader(k); err != nil {
				t.Fatalf("decoded header %q that Publish refuses: %v", k, err)
			}
		}
		if err := driver.Prepare([]*bus.Message{m}, 0); err != nil {
			t.Fatalf("the decoded message cannot be republished: %v", err)
		}
		if err := publishing(m, m.Attempt).Headers.Validate(); err != nil {
			t.Fatalf("republishing %+v gives an invalid table: %v", m, err)
		}
	})
}

// FuzzRoundTrip: a message Publish accepts comes back from the codec with
// the same ID, key, body, headers and publish time.
func FuzzRoundTrip(f *testing.F) {
	f.Add("id", "key", "name", "value", "content-type", "text/plain", []byte("body"), int64(1))
	f.Add("", "", "\xff", "\x00", "correlation-id", "", []byte(nil), int64(-1))
	f.Fuzz(func(t *testing.T, id, key, k1, v1, k2, v2 string, body []byte, ns int64) {
		m := &bus.Message{ID: id, Key: key, Body: body, Headers: bus.Headers{k1: v1, k2: v2}, PublishedAt: time.Unix(0, ns)}
		if driver.Prepare([]*bus.Message{m}, 0) != nil || checkHeaderFrame([]*bus.Message{m}) != nil {
			return
		}
		for k := range m.Headers {
			// RabbitMQ's own headers and the typed-header list are read
			// for what they mean, not carried.
			if strings.HasPrefix(k, "x-") || k == hdrTyped {
				return
			}
		}
		p := publishing(m, 1)
		if err := p.Headers.Validate(); err != nil {
			t.Fatalf("invalid table: %v", err)
		}
		back := message(&amqp.Delivery{Headers: p.Headers, MessageId: p.MessageId, Body: p.Body,
			ContentType: p.ContentType, ContentEncoding: p.ContentEncoding, CorrelationId: p.CorrelationId, Timestamp: p.Timestamp})
		want := maps.Clone(m.Headers)
		for _, k := range []string{hdrContentType, hdrContentEncoding, bus.HeaderCorrelationID} {
			if want[k] == "" {
				delete(want, k) // an empty property is no property
			}
		}
		got := maps.Clone(back.Headers)
		for _, k := range []string{hdrContentType, hdrContentEncoding, bus.HeaderCorrelationID} {
			if got[k] == "" {
				delete(got, k)
			}
		}
		if back.ID != m.ID || back.Key != m.Key || !bytes.Equal(back.Body, m.Body) || !maps.Equal(got, want) ||
			!back.PublishedAt.Equal(m.PublishedAt) || back.Attempt != 1 {
			t.Fatalf("sent %+v, got back %+v", m, back)
		}
	})
}
