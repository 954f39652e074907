package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/badinput"
)

// FuzzParseURL: ParseURL never panics, fails only with ErrBadURL, and its
// errors never show the URL's password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"mem://", "amqp://guest:guest@127.0.0.1:5672/", "kafka://u:p4ssw0rd@h1:9092,h2:9092?sasl=plain",
		"redis://:pw@localhost:6379/0", "AMQP://Host", "", "://", "amqp", "amqp:opaque",
		"amqp://u:p%zzassword@h/", "amqp://u:pa ss@h/", "amqp://[::1", "amqp://h:port/",
		"a\x00b://x", "redis://u:secret@h:99999999999/", "kafka://h?x=%", "http://%41:8080/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := bus.ParseURL(raw)
		if err != nil {
			if !errors.Is(err, bus.ErrBadURL) {
				t.Fatalf("ParseURL(%q) = %v, want ErrBadURL", raw, err)
			}
			if s, leak := badinput.ShowsPassword(raw, err); leak {
				t.Fatalf("ParseURL(%q) error shows the password %q: %v", raw, s, err)
			}
			return
		}
		if u.Scheme == "" || u.Scheme != strings.ToLower(u.Scheme) {
			t.Fatalf("ParseURL(%q) scheme %q: want a non-empty lower-case scheme", raw, u.Scheme)
		}
	})
}

// FuzzParseURLPassword writes a URL as a user would, with a password of
// any text pasted in unescaped: whether or not the result parses, an error
// never shows the password, not even the part before a stray '/', '?',
// '#' or '%'.
func FuzzParseURLPassword(f *testing.F) {
	for _, s := range [][2]string{
		{"pa/ss", "127.0.0.1:5672/"}, {"pa?ss", "h/"}, {"pa#ss", "h"}, {"p%zz", "h"},
		{"p ss", "h"}, {"p:ss", "h:1"}, {"p@ss", "h"}, {"pass", "h:x"}, {"pass", "[::1"},
	} {
		f.Add(s[0], s[1])
	}
	const marker = badinput.Marker
	f.Fuzz(func(t *testing.T, pw, rest string) {
		if strings.Contains(rest, marker) {
			return
		}
		raw := "amqp://user:" + marker + pw + "@" + rest
		_, err := bus.Open(t.Context(), raw)
		if err == nil {
			t.Fatalf("Open(%q) succeeded with no adapter registered", raw)
		}
		if !errors.Is(err, bus.ErrBadURL) && !errors.Is(err, bus.ErrUnknownScheme) {
			t.Fatalf("Open(%q) = %v, want ErrBadURL or ErrUnknownScheme", raw, err)
		}
		if strings.Contains(err.Error(), marker) {
			t.Fatalf("Open(%q) error shows the password: %v", raw, err)
		}
	})
}
