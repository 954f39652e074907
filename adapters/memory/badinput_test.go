package memory_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

// A URL with several bad parameters reports each of them in one
// *bus.ConfigError.
func TestURLReportsEveryProblem(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want []string // text each problem names
	}{
		{"mem://x?max_message_size=0&colour=red&size=1", []string{"max_message_size", `"colour"`, `"size"`}},
		{"mem://x?max_message_size=-2&max_message_size=abc&y=", []string{"max_message_size", `"y"`}},
	} {
		_, err := bus.Open(context.Background(), tc.url)
		var ce *bus.ConfigError
		if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) {
			t.Fatalf("Open(%q) = %v, want ErrBadURL with a *ConfigError", tc.url, err)
		}
		if len(ce.Problems) != len(tc.want) {
			t.Errorf("Open(%q): %d problems, want %d: %v", tc.url, len(ce.Problems), len(tc.want), err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%q) = %v, does not name %s", tc.url, err, w)
			}
		}
	}
}

// An oversize message or a bad header refuses the whole batch: nothing of
// it is stored.
func TestBadMessagesRefuseTheBatch(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Options{MaxMessageSize: 400})
	defer b.Close()
	sub, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ok := func() *bus.Message { return bus.NewMessage([]byte("fine")) }
	big := bus.NewMessage(make([]byte, 401))
	err = b.Publish(ctx, "t", ok(), big, ok())
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Limit != 400 {
		t.Fatalf("Publish with an oversize message = %v, want a SizeError for index 1", err)
	}
	for _, h := range []bus.Headers{{"": "v"}, {strings.Repeat("h", 256): "v"}, {"omnibus-key": "k"}, {"omnibus-attempt": "9"}} {
		bad := ok()
		bad.Headers = h
		if err := b.Publish(ctx, "t", ok(), bad); !errors.Is(err, bus.ErrInvalidMessage) {
			t.Errorf("Publish with headers %.40q = %v, want ErrInvalidMessage", h, err)
		}
	}
	// A header name of exactly the limit, non-UTF-8 names and values are
	// carried.
	fine := ok()
	fine.Headers = bus.Headers{strings.Repeat("h", bus.MaxHeaderName): "v", "\xff": "\xfe"}
	if err := b.Publish(ctx, "t", fine); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := sub.Receive(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().ID != fine.ID || d.Message().Headers["\xff"] != "\xfe" {
		t.Fatalf("received %+v, want only the last message, %+v", d.Message(), fine)
	}
}
