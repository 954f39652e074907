// Package badinput holds helpers of the bad-input tests: fuzz properties
// shared by the URL parsers, and servers that accept connections but never
// answer, for bounding dial times.
package badinput

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
)

// Marker starts the passwords the fuzz targets paste into URLs; an error
// that contains it shows (part of) the password.
const Marker = "Zq8-s3cr3t-"

// ShowsPassword reports whether err shows the password of the URL raw:
// the password as parsed or as written, when it is 4 bytes or longer and
// the rest of the URL does not hold the same text.
func ShowsPassword(raw string, err error) (string, bool) {
	if err == nil {
		return "", false
	}
	msg := err.Error()
	if markedPassword(raw) && strings.Contains(msg, Marker) {
		return Marker, true
	}
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return "", false
	}
	pw, ok := u.User.Password()
	if !ok || len(pw) < 4 {
		return "", false
	}
	escaped, _ := strings.CutPrefix(u.User.String(), url.PathEscape(u.User.Username())+":")
	escaped, _ = strings.CutPrefix(escaped, u.User.Username()+":")
	rest := strings.Replace(raw, escaped, "", 1)
	rest = strings.Replace(rest, pw, "", 1)
	for _, s := range []string{pw, escaped} {
		if len(s) >= 4 && strings.Contains(msg, s) && !strings.Contains(rest, s) && !strings.Contains(fixedText, s) {
			return s, true
		}
	}
	return "", false
}

// markedPassword reports whether raw was written as
// scheme://user:<Marker>...@..., a password starting with Marker, which
// may hold any character after it.
func markedPassword(raw string) bool {
	s := strings.Index(raw, "://")
	i := strings.Index(raw, ":"+Marker)
	return s >= 0 && i > s && !strings.ContainsAny(raw[s+3:i], "/?#@") && strings.Contains(raw[i:], "@")
}

// fixedText is text the errors hold whatever the input.
var fixedText = strings.Join([]string{bus.ErrBadURL.Error(), bus.ErrBadConfig.Error(),
	bus.ErrUnknownScheme.Error(), "unknown parameter", "scheme", "want", "duration", "number",
	"true or false", "positive", "byte count", "parameter", "xxxxx", "invalid"}, " ")

// CheckURLError fails t unless err, returned for the URL raw, matches
// bus.ErrBadURL or bus.ErrBadConfig and does not show the password.
func CheckURLError(t *testing.T, raw string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !errors.Is(err, bus.ErrBadURL) && !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("%q: %v, want an error matching ErrBadURL or ErrBadConfig", raw, err)
	}
	if s, leak := ShowsPassword(raw, err); leak {
		t.Fatalf("%q: the error shows the password (%q): %v", raw, s, err)
	}
}

// ClosedPort returns a loopback address where nothing listens.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Silent starts a TCP server that accepts every connection and never
// writes a byte, so a client's protocol handshake stalls. The connections
// are closed when the test ends.
func Silent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
