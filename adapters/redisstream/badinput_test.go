package redisstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/badinput"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// A URL with several bad parameters names each of them in one
// *bus.ConfigError.
func TestURLReportsEveryProblem(t *testing.T) {
	raw := "redis://u:pw-" + "hidden@h:6379/db?max_message_size=0&visibility_timeout=1ms&claim_interval=-1s" +
		"&trim_interval=x&pool_size=abc&colour=red"
	_, err := bus.Open(context.Background(), raw)
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) {
		t.Fatalf("Open = %v, want ErrBadURL with a *ConfigError", err)
	}
	want := []string{`path "/db"`, "max_message_size", "VisibilityTimeout", "claim_interval", "trim_interval", "pool_size", `"colour"`}
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d: %v", len(ce.Problems), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not name %s: %v", w, err)
		}
	}
	if strings.Contains(err.Error(), "pw-hidden") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// Open fails with ErrUnreachable within the dial timeout when nothing
// listens, and when the server accepts the connection but never answers.
func TestUnreachableIsBounded(t *testing.T) {
	for name, addr := range map[string]string{"closed port": badinput.ClosedPort(t), "silent server": badinput.Silent(t)} {
		t.Run(name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			start := time.Now()
			b, err := bus.Open(context.Background(), "redis://u:secret-pw@"+addr+"/0?dial_timeout=300ms")
			took := time.Since(start)
			if b != nil {
				b.Close()
			}
			if !errors.Is(err, bus.ErrUnreachable) {
				t.Fatalf("Open = %v, want ErrUnreachable", err)
			}
			if strings.Contains(err.Error(), "secret-pw") {
				t.Errorf("the error shows the password: %v", err)
			}
			if took > timeout+5*time.Second {
				t.Fatalf("Open returned after %v with a dial timeout of %v", took, timeout)
			}
		})
	}
}

// An oversize message or an invalid header refuses the whole batch before
// anything is written.
func TestBadMessagesRefuseTheBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := options(t)
	o.MaxMessageSize = 4 << 10
	b := newBroker(t, o)
	topic := brokertest.Name(t)
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	defer b.Client().Del(context.Background(), topic)
	ok := func() *bus.Message { return bus.NewMessage([]byte("fine")) }

	err = b.Publish(ctx, topic, ok(), bus.NewMessage(make([]byte, 4<<10+1)), ok())
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Limit != 4<<10 {
		t.Fatalf("Publish with an oversize message = %v, want a SizeError for index 1", err)
	}
	for name, h := range map[string]bus.Headers{
		"empty name": {"": "v"},
		"long name":  {strings.Repeat("n", 256): "v"},
		"field name": {"omnibus-id": "other"},
	} {
		bad := ok()
		bad.Headers = h
		if err := b.Publish(ctx, topic, ok(), bad); !errors.Is(err, bus.ErrInvalidMessage) {
			t.Errorf("%s: Publish = %v, want ErrInvalidMessage", name, err)
		}
	}
	if n, err := b.Client().XLen(ctx, topic).Result(); err != nil || n != 0 {
		t.Fatalf("the stream holds %d entries (%v) after refused batches, want 0", n, err)
	}
	good := ok()
	good.Headers = bus.Headers{strings.Repeat("n", bus.MaxHeaderName): "v", "\xff": "\xfe"}
	if err := b.Publish(ctx, topic, good); err != nil {
		t.Fatalf("Publish of a valid message after the refused ones: %v", err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Message(); got.ID != good.ID || got.Headers["\xff"] != "\xfe" {
		t.Fatalf("received %.200v, want only the valid message", got)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// Entries another Redis client added, with bodies that are not a task's
// JSON and fields that do not parse, are dead-lettered with a reason; the
// worker goes on with the next task.
func TestUndecodableMessages(t *testing.T) {
	b := newBroker(t, options(t))
	queue := brokertest.Name(t)
	defer b.Client().Del(context.Background(), queue, queue+".dlq")
	task := "h:omnibus-task"
	badinput.Undecodable(t, b, queue, func(ctx context.Context) int {
		raw := [][]string{
			{"b", "{not json", task, badinput.TaskName, "t", "yesterday", "a", "-7", "h:", "empty", "omnibus-id", "x"},
			{"b", "\xff\xfe\x00", task, badinput.TaskName, "a", "99999999999999999999", "i", ""},
			{"b", `{"n":"not a number"}`, task, badinput.TaskName},
			{"event", "not an omnibus entry"},
			{task, "\xff"},
		}
		pipe := b.Client().Pipeline()
		for _, fields := range raw {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: queue, Values: fields})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("raw XADD: %v", err)
		}
		return len(raw)
	})
}
