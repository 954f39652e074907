package kafka

import (
	"bytes"
	"errors"
	"maps"
	"net/url"
	"testing"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/badinput"
)

// FuzzParseURL: parsing any kafka:// URL never panics, fails with
// bus.ErrBadURL, and never shows the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"kafka://127.0.0.1:9092", "kafka://u:p4ss@h1:9092,h2?sasl=scram-sha-512&tls=true",
		"kafka://h:9092?partitions=0&replication_factor=-2&batch_size=x&compression=brotli&dial_timeout=-1s",
		"kafka://h:9092?brokers=[::1]:9092,h3&create_topics=no&blocking_retry=1&retry_lookahead=0",
		"kafka://u:" + badinput.Marker + "/x@h:9092?sasl=plain", "kafka://u:pw12345@h:9092", "kafka:opaque",
		"kafka://h:9092/path?tls_skip_verify=maybe&session_timeout=1h&unknown=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := bus.ParseURL(raw)
		if err != nil {
			badinput.CheckURLError(t, raw, err)
			return
		}
		if q, err := url.ParseQuery(u.RawQuery); err == nil && q.Has("tls_ca") {
			return // reads a file: not for a fuzzer to pick
		}
		u.Scheme = Scheme
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

// FuzzDecode: a record from any producer decodes without panicking into a
// message with an ID and only headers that Publish accepts.
func FuzzDecode(f *testing.F) {
	f.Add("omnibus-attempt", []byte("-5"), "omnibus-due", []byte("x"), "omnibus-published-ns", []byte("99999999999999999999"), []byte("k"), []byte("v"))
	f.Add("", []byte(nil), "omnibus-key", []byte{0xff}, "omnibus-id", []byte(""), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte, key, value []byte) {
		r := &franz.Record{Topic: "t", Partition: 1, Offset: 7, Key: key, Value: value, Timestamp: time.Unix(1, 0),
			Headers: []franz.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}, {Key: k3, Value: v3}, {Key: k1, Value: v2}}}
		m, attempt, _ := decode(r)
		if m.ID == "" || attempt < 0 || !bytes.Equal(m.Body, value) || m.Key != string(key) {
			t.Fatalf("decoded %+v, attempt %d, from %+v", m, attempt, r)
		}
		for k := range m.Headers {
			if err := driver.CheckHeader(k); err != nil {
				t.Fatalf("decoded header %q that Publish refuses: %v", k, err)
			}
		}
		if err := driver.Prepare([]*bus.Message{m}, 0); err != nil {
			t.Fatalf("the decoded message cannot be republished: %v", err)
		}
	})
}

// FuzzRoundTrip: a message Publish accepts comes back from the codec with
// the same ID, key, body, headers and publish time, and a retry record
// with its attempt and due time.
func FuzzRoundTrip(f *testing.F) {
	f.Add("id", "key", "name", "value", "h2", "", []byte("body"), int64(1), 0, int64(0))
	f.Add("", "", "\xff", "\x00", "omnibus-error", "boom", []byte(nil), int64(-1), 3, int64(1e12))
	f.Fuzz(func(t *testing.T, id, key, k1, v1, k2, v2 string, body []byte, ns int64, attempt int, dueMS int64) {
		m := &bus.Message{ID: id, Key: key, Body: body, Headers: bus.Headers{k1: v1, k2: v2}, PublishedAt: time.Unix(0, ns)}
		if driver.Prepare([]*bus.Message{m}, 0) != nil || len(m.Headers[bus.HeaderError]) > maxErrorHeader {
			return
		}
		attempt = max(attempt, 0)
		due := time.Time{}
		if attempt > 0 {
			due = time.UnixMilli(dueMS)
		}
		back, gotAttempt, gotDue := decode(fetched(encode("t", m, attempt, due)))
		if back.ID != m.ID || back.Key != m.Key || !bytes.Equal(back.Body, m.Body) || !maps.Equal(back.Headers, m.Headers) ||
			!back.PublishedAt.Equal(m.PublishedAt) || gotAttempt != attempt || !gotDue.Equal(due) {
			t.Fatalf("sent %+v (attempt %d, due %v), got back %+v (attempt %d, due %v)", m, attempt, due, back, gotAttempt, gotDue)
		}
	})
}

// fetched is a produced record as a consumer fetches it back: a copy,
// with the timestamp in milliseconds.
func fetched(r *franz.Record) *franz.Record {
	c := *r
	c.Headers = append([]franz.RecordHeader(nil), r.Headers...)
	c.Timestamp = r.Timestamp.Truncate(time.Millisecond)
	return &c
}
