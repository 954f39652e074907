package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/badinput"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// A URL with several bad parameters names each of them in one
// *bus.ConfigError.
func TestURLReportsEveryProblem(t *testing.T) {
	raw := "kafka://u:pw-" + "hidden@h1:9092/path?partitions=0&dial_timeout=soon&tls=maybe&batch_size=-1" +
		"&compression=brotli&sasl=kerberos&create_topics=perhaps&colour=blue"
	_, err := bus.Open(context.Background(), raw)
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) {
		t.Fatalf("Open = %v, want ErrBadURL with a *ConfigError", err)
	}
	want := []string{"no path", "partitions", "dial_timeout", "tls", "batch_size", "brotli", "kerberos", "create_topics", `"colour"`}
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
			b, err := bus.Open(context.Background(), "kafka://u:secret-pw@"+addr+"?sasl=plain&dial_timeout=300ms")
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := testOptions(t)
	opts.MaxMessageSize = 4 << 10
	c := connect(t, opts)
	defer c.Close()
	topic := brokertest.Name(t)
	sub, err := c.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ok := func() *bus.Message { return bus.NewMessage([]byte("fine")) }

	err = c.Publish(ctx, topic, ok(), bus.NewMessage(make([]byte, 4<<10+1)), ok())
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Limit != 4<<10 {
		t.Fatalf("Publish with an oversize message = %v, want a SizeError for index 1", err)
	}
	for name, h := range map[string]bus.Headers{
		"empty name": {"": "v"},
		"long name":  {strings.Repeat("n", 256): "v"},
		"field name": {kafka.HeaderID: "other"},
	} {
		bad := ok()
		bad.Headers = h
		if err := c.Publish(ctx, topic, ok(), bad); !errors.Is(err, bus.ErrInvalidMessage) {
			t.Errorf("%s: Publish = %v, want ErrInvalidMessage", name, err)
		}
	}
	good := ok()
	good.Headers = bus.Headers{strings.Repeat("n", bus.MaxHeaderName): "v", "\xff": "\xfe"}
	if err := c.Publish(ctx, topic, good); err != nil {
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

// Records another Kafka client wrote, with bodies that are not a task's
// JSON and omnibus headers that do not parse, are dead-lettered with a
// reason; the worker goes on with the next task.
func TestUndecodableMessages(t *testing.T) {
	c := connect(t, testOptions(t))
	defer c.Close()
	queue := brokertest.Name(t)
	badinput.Undecodable(t, c, queue, func(ctx context.Context) int {
		task := franz.RecordHeader{Key: "omnibus-task", Value: []byte(badinput.TaskName)}
		raw := []*franz.Record{
			{Value: []byte("{not json"), Headers: []franz.RecordHeader{task,
				{Key: kafka.HeaderPublishedAt, Value: []byte("yesterday")}, {Key: kafka.HeaderAttempt, Value: []byte("-4")},
				{Key: kafka.HeaderDue, Value: []byte("soon")}, {Key: kafka.HeaderID, Value: nil}, {Key: "", Value: []byte("empty")}}},
			{Value: []byte{0xff, 0xfe, 0x00}, Key: []byte{0xff}, Headers: []franz.RecordHeader{task,
				{Key: kafka.HeaderAttempt, Value: []byte("99999999999999999999")}, {Key: "omnibus-key", Value: []byte("k")}}},
			{Value: []byte(`{"n":"not a number"}`), Headers: []franz.RecordHeader{task}},
			{Value: []byte("no headers at all")},
			{Value: nil, Headers: []franz.RecordHeader{{Key: "omnibus-task", Value: []byte{0xff}}}},
		}
		for i := range raw {
			raw[i].Topic = queue
		}
		produceRaw(t, ctx, raw...)
		return len(raw)
	})
}
