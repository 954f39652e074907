package sms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

func draws(ns ...uint32) io.Reader {
	var b bytes.Buffer
	for _, n := range ns {
		binary.Write(&b, binary.BigEndian, n)
	}
	return &b
}

func TestNewCode(t *testing.T) {
	for _, c := range []struct {
		draws []uint32
		want  string
	}{
		{[]uint32{0}, "000000"},
		{[]uint32{42}, "000042"},
		{[]uint32{1_999_999}, "999999"},
		{[]uint32{drawLimit - 1}, "999999"},
		// Draws in the incomplete last block would favour low codes.
		{[]uint32{drawLimit, 1<<32 - 1, 7}, "000007"},
	} {
		got, err := newCode(draws(c.draws...))
		if err != nil || got != c.want {
			t.Errorf("newCode(%v) = %q, %v; want %q", c.draws, got, err, c.want)
		}
	}
	if _, err := newCode(draws(drawLimit)); err == nil {
		t.Error("newCode with a source that runs dry succeeded")
	}
	if drawLimit%codeSpace != 0 || drawLimit > 1<<32 || 1<<32-drawLimit >= codeSpace {
		t.Fatalf("drawLimit %d is not the largest multiple of %d in 32 bits", drawLimit, codeSpace)
	}
	// crypto/rand: six digits, not always the same.
	seen := map[string]bool{}
	six := regexp.MustCompile(`^\d{6}$`)
	for range 20 {
		c, err := newCode(rand.Reader)
		if err != nil || !six.MatchString(c) {
			t.Fatalf("newCode = %q, %v", c, err)
		}
		seen[c] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 codes from crypto/rand were all %v", seen)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := New(Config{CodeTTL: -1, ResendAfter: time.Microsecond, MaxAttempts: -1})
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("New(bad config) = %v, want 5 problems at once", err)
	}
	c := Config{}.withDefaults()
	if c.CodeTTL != 5*time.Minute || c.ResendAfter != time.Minute || c.MaxAttempts != 5 || c.Queue != "sms" || c.Text("1") != "Your code is 1" {
		t.Fatalf("defaults: %+v", c)
	}
}

// failingPublisher refuses every message.
type failingPublisher struct{ err error }

func (f failingPublisher) Publish(context.Context, string, ...*bus.Message) error { return f.err }
func (f failingPublisher) Close() error                                           { return nil }

func TestRequestReleasesWhenEnqueueFails(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			store, phone := open(t)
			down := errors.New("broker down")
			svc, err := New(Config{Store: store, Publisher: failingPublisher{down}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Request(bg, phone); !errors.Is(err, down) {
				t.Fatalf("Request with the broker down = %v, want its error", err)
			}
			// Nothing half-done: the phone may ask again at once.
			if err := store.Save(bg, phone, "123456", time.Minute, time.Minute); err != nil {
				t.Fatalf("Save after a failed Request = %v, want the lock released", err)
			}
		})
	}
}

func TestRequestAndVerify(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	q := "sms-" + bus.NewID()
	svc, err := New(Config{Store: NewMemoryStore(), Publisher: b, Queue: q, Rand: draws(123456, 654321), MaxAttempts: 2,
		Text: func(code string) string { return "code: " + code }})
	if err != nil {
		t.Fatal(err)
	}
	const phone = "+15555550100"
	if _, err := svc.Request(bg, "5550100"); !errors.Is(err, ErrInvalidPhone) {
		t.Fatalf("Request(bad phone) = %v", err)
	}
	if err := svc.Verify(bg, "5550100", "123456"); !errors.Is(err, ErrInvalidPhone) {
		t.Fatalf("Verify(bad phone) = %v", err)
	}
	id, err := svc.Request(bg, phone)
	if err != nil {
		t.Fatal(err)
	}

	// The task on the queue: SendTask with the text, expiring with the code.
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, q, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := d.Message()
	exp, _ := time.Parse(time.RFC3339Nano, m.Headers.Get(task.HeaderExpires))
	if m.ID != id || m.Headers.Get(bus.HeaderTask) != "sms.send" || string(m.Body) != `{"phone":"+15555550100","text":"code: 123456"}` ||
		time.Until(exp) <= 4*time.Minute || time.Until(exp) > 5*time.Minute {
		t.Fatalf("task message %s %v %s, want id %s, sms.send expiring in 5m", m.ID, m.Headers, m.Body, id)
	}

	if _, err := svc.Request(bg, phone); !errors.Is(err, ErrTooSoon) {
		t.Fatalf("second Request = %v, want ErrTooSoon", err)
	}
	if err := svc.Verify(bg, phone, "000000"); !errors.Is(err, ErrWrongCode) || errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("wrong guess = %v", err)
	}
	if err := svc.Verify(bg, phone, "123456"); err != nil {
		t.Fatalf("right guess = %v", err)
	}
	if err := svc.Verify(bg, phone, "123456"); !errors.Is(err, ErrNoCode) {
		t.Fatalf("reused code = %v, want ErrNoCode", err)
	}
}

func TestErrorsText(t *testing.T) {
	for err, want := range map[error]string{
		&TooSoonError{RetryAfter: 59500 * time.Millisecond}: "retry in 59.5s",
		&WrongCodeError{Remaining: 3}:                       "3 attempt(s) left",
		&WrongCodeError{Remaining: 0}:                       "request a new code",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}
