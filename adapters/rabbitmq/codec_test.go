package rabbitmq

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
)

// Celery's headers as Celery 5 publishes them: typed values next to
// strings. A consumer that republishes what it received (a Nack, a
// postponed task) must hand Celery the same types.
func TestCodecTypedHeadersRoundTrip(t *testing.T) {
	in := amqp.Table{
		"task":          "tasks.send_sms_code",
		"retries":       int64(2),
		"timelimit":     []any{int64(30), nil},
		"eta":           nil,
		"ignore_result": false,
		"ratio":         1.5,
		"stamps":        amqp.Table{"a": "b", "n": int32(7)},
		"raw":           []byte("bytes"),
	}
	d := &amqp.Delivery{Headers: in, ContentType: "application/json", ContentEncoding: "utf-8", CorrelationId: "c-1", Body: []byte("[]")}
	m := message(d)

	if got, want := m.Headers[hdrTyped], "eta,ignore_result,ratio,retries,stamps,timelimit"; got != want {
		t.Fatalf("typed list %q, want %q", got, want)
	}
	for k, want := range map[string]string{
		"task": "tasks.send_sms_code", "retries": "2", "timelimit": "[30,null]", "eta": "null",
		"ignore_result": "false", "ratio": "1.5", "stamps": `{"a":"b","n":7}`, "raw": "bytes",
		"content-type": "application/json", "content-encoding": "utf-8", bus.HeaderCorrelationID: "c-1",
	} {
		if got := m.Headers[k]; got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	p := publishing(m, 1)
	if p.ContentType != "application/json" || p.ContentEncoding != "utf-8" || p.CorrelationId != "c-1" {
		t.Errorf("properties %q %q %q", p.ContentType, p.ContentEncoding, p.CorrelationId)
	}
	if _, ok := p.Headers[hdrTyped]; ok {
		t.Errorf("%s travelled as an AMQP header", hdrTyped)
	}
	want := amqp.Table{
		"task":          "tasks.send_sms_code",
		"retries":       int64(2),
		"timelimit":     []any{int64(30), nil},
		"eta":           nil,
		"ignore_result": false,
		"ratio":         1.5,
		"stamps":        amqp.Table{"a": "b", "n": int64(7)},
		"raw":           "bytes",
	}
	for k, w := range want {
		if got := p.Headers[k]; !reflect.DeepEqual(got, w) {
			t.Errorf("published %s = %#v (%T), want %#v (%T)", k, got, got, w, w)
		}
	}
	if err := p.Headers.Validate(); err != nil {
		t.Errorf("published headers are not a valid AMQP table: %v", err)
	}
}

// Plain string headers are untouched, and a producer cannot smuggle in a
// typed list: only the codec writes one.
func TestCodecPlainHeaders(t *testing.T) {
	m := &bus.Message{ID: "m1", Headers: bus.Headers{"a": "1", "b": "[1]"}, PublishedAt: time.Unix(1, 0)}
	p := publishing(m, 1)
	if p.Headers["a"] != "1" || p.Headers["b"] != "[1]" {
		t.Fatalf("plain headers changed: %#v", p.Headers)
	}
	got := message(&amqp.Delivery{Headers: amqp.Table{"a": "1", hdrTyped: "a"}})
	if got.Headers["a"] != "1" {
		t.Fatalf("a = %q", got.Headers["a"])
	}
	if _, ok := got.Headers[hdrTyped]; ok {
		t.Fatalf("a received %s header was kept", hdrTyped)
	}
}

// A listed header whose text is not JSON is sent as the string it is.
func TestCodecTypedNotJSON(t *testing.T) {
	m := &bus.Message{ID: "m1", Headers: bus.Headers{"x": "not json", "y": "1 2", hdrTyped: "x,y"}}
	p := publishing(m, 1)
	if p.Headers["x"] != "not json" || p.Headers["y"] != "1 2" {
		t.Fatalf("got %#v", p.Headers)
	}
}

// FuzzCodecTypedHeader: whatever text a typed header holds, publishing
// yields a valid AMQP table, and JSON comes back as the same value.
func FuzzCodecTypedHeader(f *testing.F) {
	for _, s := range []string{`0`, `[30,null]`, `null`, `{"a":[1,2.5,true]}`, `"x"`, `1e400`, `12345678901234567891`, `[`, `1 2`, `{"a":{"b":{}}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := &bus.Message{ID: "m", Headers: bus.Headers{"h": s, hdrTyped: "h"}}
		p := publishing(m, 1)
		if err := p.Headers.Validate(); err != nil {
			t.Fatalf("%q published as an invalid table: %v", s, err)
		}
		var want any
		if json.Unmarshal([]byte(s), &want) != nil {
			return
		}
		back := message(&amqp.Delivery{Headers: p.Headers})
		if str, isString := want.(string); isString {
			// A JSON string travels as a plain AMQP string.
			if back.Headers["h"] != str || back.Headers[hdrTyped] != "" {
				t.Fatalf("%q came back as %q, typed %q", s, back.Headers["h"], back.Headers[hdrTyped])
			}
			return
		}
		var got any
		if err := json.Unmarshal([]byte(back.Headers["h"]), &got); err != nil {
			t.Fatalf("%q came back as %q: %v", s, back.Headers["h"], err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q came back as %q", s, back.Headers["h"])
		}
	})
}
