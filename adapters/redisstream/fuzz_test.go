package redisstream

import (
	"bytes"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/badinput"
)

// FuzzParseURL: parsing any redis:// URL never panics, fails with
// bus.ErrBadURL, and never shows the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "rediss://u:p4ssword@h:6380/3?dial_timeout=1s&pool_size=4",
		"redis://:pw@h/x?max_message_size=0&visibility_timeout=1ms&claim_interval=-1s&trim_interval=x&colour=red",
		"redis://h:0/-1?pool_size=abc&read_timeout=0", "redis://u:" + badinput.Marker + "/x@h/", "redis:opaque",
		"redis://:12345678@h:99999/", "redis://[::1]:6379/?max_message_size=300000000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := bus.ParseURL(raw)
		if err != nil {
			badinput.CheckURLError(t, raw, err)
			return
		}
		if u.Scheme != SchemeTLS {
			u.Scheme = Scheme
		}
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

// FuzzDecode: an entry any client wrote decodes without panicking into a
// message with an ID, a non-negative attempt count and only headers that
// Publish accepts.
func FuzzDecode(f *testing.F) {
	f.Add("a", "-5", "h:", "x", "omnibus-id", "y", "b", "z")
	f.Add("a", "99999999999999999999", "t", "later", "i", "", "k", "\xff")
	f.Add("h:omnibus-key", "x", "", "", "odd", "", "a", "9223372036854775807")
	f.Fuzz(func(t *testing.T, f1, v1, f2, v2, f3, v3, f4, v4 string) {
		for _, fields := range [][]string{{f1, v1, f2, v2, f3, v3, f4, v4}, {f1, v1, f2}, nil} {
			m, attempts := decode("1-0", fields)
			if m.ID == "" || attempts < 0 || attempts > 1<<31 {
				t.Fatalf("decoded %+v, attempts %d, from %q", m, attempts, fields)
			}
			for k := range m.Headers {
				if err := driver.CheckHeader(k); err != nil {
					t.Fatalf("decoded header %q that Publish refuses: %v", k, err)
				}
			}
			if err := driver.Prepare([]*bus.Message{m}, 0); err != nil {
				t.Fatalf("the decoded message cannot be republished: %v", err)
			}
		}
	})
}

// FuzzRoundTrip: a message Publish accepts comes back from the codec with
// the same ID, key, body, headers, publish time and attempt count.
func FuzzRoundTrip(f *testing.F) {
	f.Add("id", "key", "name", "value", "a", "", []byte("body"), int64(1), 0)
	f.Add("", "", "\xff", "\x00", "h:x", "i", []byte(nil), int64(-1), 3)
	f.Fuzz(func(t *testing.T, id, key, k1, v1, k2, v2 string, body []byte, ns int64, attempts int) {
		m := &bus.Message{ID: id, Key: key, Body: body, Headers: bus.Headers{k1: v1, k2: v2}, PublishedAt: time.Unix(0, ns)}
		if driver.Prepare([]*bus.Message{m}, 0) != nil {
			return
		}
		attempts = min(max(attempts, 0), 1<<20)
		// XADD takes the values as Redis strings.
		args := encode(m, attempts)
		fields := make([]string, len(args))
		for i, a := range args {
			switch a := a.(type) {
			case string:
				fields[i] = a
			case []byte:
				fields[i] = string(a)
			default:
				t.Fatalf("encode gave a %T", a)
			}
		}
		back, gotAttempts := decode("9-9", fields)
		if back.ID != m.ID || back.Key != m.Key || !bytes.Equal(back.Body, m.Body) || !maps.Equal(back.Headers, m.Headers) ||
			!back.PublishedAt.Equal(m.PublishedAt) || gotAttempts != attempts {
			t.Fatalf("sent %+v (attempts %d), got back %+v (attempts %d)", m, attempts, back, gotAttempts)
		}
	})
}
