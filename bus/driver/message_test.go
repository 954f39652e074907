package driver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestPrepare(t *testing.T) {
	ok := &bus.Message{Body: []byte("fine")}
	big := &bus.Message{Body: make([]byte, 100)}
	err := Prepare([]*bus.Message{ok, big}, 50)
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Size != 100 || se.Limit != 50 {
		t.Fatalf("Prepare = %v, want SizeError{1, 100, 50}", err)
	}
	if ok.ID != "" {
		t.Fatal("a refused batch had IDs assigned")
	}
	if err := Prepare([]*bus.Message{ok, nil}, 0); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Prepare with nil = %v, want ErrInvalidMessage", err)
	}
	keep := &bus.Message{ID: "given", PublishedAt: time.Unix(1, 0)}
	if err := Prepare([]*bus.Message{ok, keep, big}, 0); err != nil {
		t.Fatal(err)
	}
	if ok.ID == "" || ok.PublishedAt.IsZero() {
		t.Fatal("Prepare did not assign ID and PublishedAt")
	}
	if keep.ID != "given" || !keep.PublishedAt.Equal(time.Unix(1, 0)) {
		t.Fatal("Prepare overwrote a given ID or time")
	}
}

func TestSubscribeOptionsDefaults(t *testing.T) {
	o := Defaults("sms", bus.SubscribeOptions{})
	if o.Group != bus.DefaultGroup || o.Prefetch != 1 || o.MaxAttempts != bus.DefaultMaxAttempts || o.DeadLetterTopic != "sms.dlq" {
		t.Fatalf("defaults = %+v", o)
	}
	if !exhausted(o, bus.DefaultMaxAttempts) || exhausted(o, bus.DefaultMaxAttempts-1) {
		t.Fatal("exhausted disagrees with MaxAttempts")
	}
	if exhausted(bus.SubscribeOptions{MaxAttempts: -1}, 1<<30) {
		t.Fatal("negative MaxAttempts must never be exhausted")
	}
}

// FuzzPrepare: Prepare never panics, and refuses a message exactly when
// one of its header names is invalid (ErrInvalidMessage) or it is over the
// limit (a *SizeError), filling in ID and PublishedAt otherwise.
func FuzzPrepare(f *testing.F) {
	f.Add("k", "v", "id", "key", []byte("body"), 100)
	f.Add("", "v", "", "", []byte(nil), 0)
	f.Add("omnibus-key", "x", "", "", []byte("b"), -1)
	f.Add(strings.Repeat("n", 256), "", "", "", []byte{}, 10)
	f.Add("\xff", "\xfe", "\x00", "k", []byte{0}, 3)
	f.Fuzz(func(t *testing.T, name, value, id, key string, body []byte, limit int) {
		m := &bus.Message{ID: id, Key: key, Body: body, Headers: bus.Headers{name: value}}
		size := m.Size()
		err := Prepare([]*bus.Message{m}, limit)
		herr := CheckHeader(name)
		var se *bus.SizeError
		switch {
		case herr != nil:
			if !errors.Is(err, bus.ErrInvalidMessage) {
				t.Fatalf("header %q (%v): Prepare = %v, want ErrInvalidMessage", name, herr, err)
			}
		case limit > 0 && size > limit:
			if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Size != size || se.Limit != limit {
				t.Fatalf("size %d limit %d: Prepare = %v, want a SizeError", size, limit, err)
			}
		case err != nil:
			t.Fatalf("Prepare = %v, want nil", err)
		default:
			if m.ID == "" || m.PublishedAt.IsZero() || (id != "" && m.ID != id) {
				t.Fatalf("Prepare left ID %q PublishedAt %v", m.ID, m.PublishedAt)
			}
		}
	})
}

// Prepare refuses a batch with an invalid header name as a whole, naming
// the message.
func TestPrepareRefusesInvalidHeaders(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("x", bus.MaxHeaderName+1), "omnibus-id", "omnibus-key",
		"omnibus-published-ns", "omnibus-published-at", "omnibus-attempt", "omnibus-due"} {
		ok := &bus.Message{Body: []byte("ok")}
		bad := &bus.Message{Headers: bus.Headers{name: "v"}}
		err := Prepare([]*bus.Message{ok, bad}, 0)
		if !errors.Is(err, bus.ErrInvalidMessage) || !strings.Contains(err.Error(), "message 1") {
			t.Errorf("header %.20q: Prepare = %v, want ErrInvalidMessage naming message 1", name, err)
		}
		if ok.ID != "" {
			t.Errorf("header %.20q: Prepare filled in the ID of a refused batch", name)
		}
	}
	fine := &bus.Message{Headers: bus.Headers{strings.Repeat("x", bus.MaxHeaderName): "\xff", "\xfe": "", bus.HeaderTask: "t", bus.HeaderError: "e"}}
	if err := Prepare([]*bus.Message{fine}, 0); err != nil {
		t.Errorf("Prepare = %v, want nil", err)
	}
}
