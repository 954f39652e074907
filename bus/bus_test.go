package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestNewIDIsOrderedAndUnique(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := bus.NewID()
		if seen[id] || id < prev {
			t.Fatalf("NewID gave %s after %s", id, prev)
		}
		seen[id], prev = true, id
	}
}

func TestSizeCountsEverything(t *testing.T) {
	m := &bus.Message{ID: "ab", Key: "cde", Body: []byte("f"), Headers: bus.Headers{"gh": "ij"}}
	if m.Size() != 2+3+1+4 {
		t.Fatalf("Size = %d, want 10", m.Size())
	}
}

func TestCloneIsDeep(t *testing.T) {
	m := &bus.Message{Body: []byte("a"), Headers: bus.Headers{"k": "v"}}
	c := m.Clone()
	c.Body[0], c.Headers["k"] = 'b', "w"
	if string(m.Body) != "a" || m.Headers["k"] != "v" {
		t.Fatal("Clone shares body or headers")
	}
}

func TestOutcomeErrorsMatch(t *testing.T) {
	base := errors.New("gateway down")
	for _, tc := range []struct {
		err  error
		kind error
	}{
		{bus.NoRetry(base), bus.ErrNoRetry},
		{bus.Drop(base), bus.ErrDrop},
		{bus.RetryAfter(base, time.Second), nil},
	} {
		wrapped := errors.Join(errors.New("context"), tc.err)
		if !errors.Is(wrapped, base) {
			t.Errorf("%v does not match its cause", tc.err)
		}
		if tc.kind != nil && !errors.Is(wrapped, tc.kind) {
			t.Errorf("%v does not match %v", tc.err, tc.kind)
		}
		if tc.err.Error() != "gateway down" {
			t.Errorf("Error() = %q, want the cause's text", tc.err.Error())
		}
	}
	if errors.Is(bus.RetryAfter(base, 0), bus.ErrNoRetry) || errors.Is(bus.NoRetry(nil), bus.ErrDrop) {
		t.Fatal("outcome kinds leak into each other")
	}
}

func TestExponentialBackoff(t *testing.T) {
	b := bus.ExponentialBackoff(100*time.Millisecond, time.Second)
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		for range 100 {
			if d := b(attempt); d < want/2 || d > want {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestOpenErrorsHidePasswords(t *testing.T) {
	for _, u := range []string{
		"nosuch://user:s3cr3t-pw@host:1/",
		"amqp://user:s3cr3t-pw@host:port-not-a-number/",
		"amqp://user:s3cr3t-pw@[::1/",
	} {
		_, err := bus.Open(context.Background(), u)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("Open error leaks the password: %v", err)
		}
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering mem twice did not panic")
		}
	}()
	bus.Register("MEM", nil)
}
