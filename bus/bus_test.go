package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestPrepare(t *testing.T) {
	ok := &bus.Message{Body: []byte("fine")}
	big := &bus.Message{Body: make([]byte, 100)}
	err := bus.Prepare([]*bus.Message{ok, big}, 50)
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Size != 100 || se.Limit != 50 {
		t.Fatalf("Prepare = %v, want SizeError{1, 100, 50}", err)
	}
	if ok.ID != "" {
		t.Fatal("a refused batch had IDs assigned")
	}
	if err := bus.Prepare([]*bus.Message{ok, nil}, 0); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Prepare with nil = %v, want ErrInvalidMessage", err)
	}
	keep := &bus.Message{ID: "given", PublishedAt: time.Unix(1, 0)}
	if err := bus.Prepare([]*bus.Message{ok, keep, big}, 0); err != nil {
		t.Fatal(err)
	}
	if ok.ID == "" || ok.PublishedAt.IsZero() {
		t.Fatal("Prepare did not assign ID and PublishedAt")
	}
	if keep.ID != "given" || !keep.PublishedAt.Equal(time.Unix(1, 0)) {
		t.Fatal("Prepare overwrote a given ID or time")
	}
}

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

func TestSubscribeOptionsDefaults(t *testing.T) {
	o := bus.SubscribeOptions{}.WithDefaults("sms")
	if o.Group != bus.DefaultGroup || o.Prefetch != 1 || o.MaxAttempts != bus.DefaultMaxAttempts || o.DeadLetterTopic != "sms.dlq" {
		t.Fatalf("defaults = %+v", o)
	}
	if !o.Exhausted(bus.DefaultMaxAttempts) || o.Exhausted(bus.DefaultMaxAttempts-1) {
		t.Fatal("Exhausted disagrees with MaxAttempts")
	}
	if (bus.SubscribeOptions{MaxAttempts: -1}).Exhausted(1 << 30) {
		t.Fatal("negative MaxAttempts must never be exhausted")
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
