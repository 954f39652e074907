// Package badinput holds helpers of the bad-input tests: fuzz properties
// shared by the URL parsers, and servers that accept connections but never
// answer, for bounding dial times.
package badinput

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
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
	_, escaped, _ := strings.Cut(u.User.String(), ":")
	// Text that the URL holds outside its password (the user name, the
	// host) may show in errors.
	rest := u.Redacted() + " " + raw[:max(strings.Index(raw, ":"+escaped), 0)] + " " + u.Host + " " + u.RawQuery
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

// Args are the arguments of the task Undecodable runs.
type Args struct {
	N int `json:"n"`
}

// TaskName is the task Undecodable registers; raw records that name it
// with a body that is not its JSON must be dead-lettered as a bad payload.
const TaskName = "badinput.echo"

// Undecodable checks that records another client wrote to queue, which
// omnibus cannot decode, neither crash nor block a task worker on b: a
// task sent before them and one sent after them both run, and each of the
// want records written by writeRaw lands in queue's dead-letter topic with
// task.ErrBadPayload or task.ErrUnknownTask as its reason.
func Undecodable(t *testing.T, b bus.Broker, queue string, writeRaw func(ctx context.Context) (want int)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	echo := task.Define[Args](TaskName, task.OnQueue(queue), task.MaxRetries(0))
	w, err := task.NewWorker(b, task.WorkerConfig{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan int, 16)
	task.Handle(w, echo, func(_ context.Context, a Args) error { ran <- a.N; return nil })
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	await := func(n int) {
		t.Helper()
		if _, err := echo.Delay(ctx, b, Args{N: n}); err != nil {
			t.Fatalf("Delay: %v", err)
		}
		select {
		case got := <-ran:
			if got != n {
				t.Fatalf("task %d ran, want %d", got, n)
			}
		case <-ctx.Done():
			t.Fatalf("task %d did not run", n)
		case err := <-done:
			t.Fatalf("worker stopped: %v", err)
		}
	}
	await(1)
	want := writeRaw(ctx)
	await(2)

	sub, err := b.Subscribe(ctx, queue+".dlq", bus.SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe to the dead-letter topic: %v", err)
	}
	defer sub.Close()
	for i := range want {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("dead letter %d of %d: %v", i+1, want, err)
		}
		m := d.Message()
		reason := m.Headers.Get(bus.HeaderError)
		if !strings.Contains(reason, task.ErrBadPayload.Error()) && !strings.Contains(reason, task.ErrUnknownTask.Error()) {
			t.Errorf("dead letter %q (headers %q): reason %q, want a bad payload or an unknown task", m.Body, m.Headers, reason)
		}
		t.Logf("dead letter %.40q: %s", m.Body, reason)
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	select {
	case n := <-ran:
		t.Fatalf("an undecodable record ran as task %d", n)
	default:
	}
}
