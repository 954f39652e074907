package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/badinput"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// A URL with several bad parameters names each of them in one
// *bus.ConfigError.
func TestURLReportsEveryProblem(t *testing.T) {
	raw := "amqp://u:pw-" + "hidden@127.0.0.1:1/?topology=star&queue_type=stream&max_message_size=big" +
		"&publish_channels=-2&dial_timeout=soon&no_default_group=maybe&confirm_window=x"
	_, err := bus.Open(context.Background(), raw)
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) {
		t.Fatalf("Open = %v, want ErrBadURL with a *ConfigError", err)
	}
	want := []string{`"star"`, `"stream"`, "max_message_size", `publish_channels="-2"`, "dial_timeout", "no_default_group", "confirm_window"}
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
// listens, and when the server accepts the connection but never answers
// the AMQP handshake.
func TestUnreachableIsBounded(t *testing.T) {
	for name, addr := range map[string]string{"closed port": badinput.ClosedPort(t), "silent server": badinput.Silent(t)} {
		t.Run(name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			start := time.Now()
			b, err := bus.Open(context.Background(), "amqp://guest:secret-pw@"+addr+"/?dial_timeout=300ms")
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

// An oversize message or a header RabbitMQ cannot carry refuses the whole
// batch before anything is sent, and leaves the connection working.
func TestBadMessagesRefuseTheBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := connect(t, rabbitmq.Options{URL: amqpURL(t), MaxMessageSize: 1 << 20})
	defer b.Close()
	topic := brokertest.Name(t)
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ok := func() *bus.Message { return bus.NewMessage([]byte("fine")) }

	err = b.Publish(ctx, topic, ok(), bus.NewMessage(make([]byte, 1<<20+1)), ok())
	var se *bus.SizeError
	if !errors.As(err, &se) || !errors.Is(err, bus.ErrTooLarge) || se.Index != 1 || se.Limit != 1<<20 {
		t.Fatalf("Publish with an oversize message = %v, want a SizeError for index 1", err)
	}
	for name, h := range map[string]bus.Headers{
		"empty name":    {"": "v"},
		"long name":     {strings.Repeat("n", 256): "v"},
		"field name":    {"omnibus-attempt": "7"},
		"over a frame":  {"big": strings.Repeat("x", 200<<10)}, // under the size limit
		"many in frame": manyHeaders(2000, 100),
	} {
		bad := ok()
		bad.Headers = h
		if err := b.Publish(ctx, topic, ok(), bad); !errors.Is(err, bus.ErrInvalidMessage) {
			t.Errorf("%s: Publish = %v, want ErrInvalidMessage", name, err)
		}
	}
	good := ok()
	good.Headers = bus.Headers{strings.Repeat("n", bus.MaxHeaderName): "v", "\xff": "\xfe", "big": strings.Repeat("x", 100<<10)}
	if err := b.Publish(ctx, topic, good); err != nil {
		t.Fatalf("Publish of a valid message after the refused ones: %v", err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Message(); got.ID != good.ID || got.Headers["\xff"] != "\xfe" || len(got.Headers["big"]) != 100<<10 {
		t.Fatalf("received %.200v, want only the valid message", got)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

func manyHeaders(n, size int) bus.Headers {
	h := bus.Headers{}
	for i := range n {
		h[strings.Repeat("h", 8)+string(rune('a'+i%26))+strings.Repeat("0", i/26%10)+string(rune('A'+i/260))] = strings.Repeat("v", size)
	}
	return h
}

// Messages another AMQP client published, with bodies that are not a
// task's JSON and omnibus headers of the wrong types, are dead-lettered
// with a reason; the worker goes on with the next task.
func TestUndecodableMessages(t *testing.T) {
	url := amqpURL(t)
	b := connect(t, rabbitmq.Options{URL: url})
	defer b.Close()
	queue := brokertest.Name(t)
	badinput.Undecodable(t, b, queue, func(ctx context.Context) int {
		conn, err := amqp.Dial(oneNode(t))
		if err != nil {
			t.Fatalf("raw client: %v", err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		raw := []amqp.Publishing{
			{Body: []byte("{not json"), Headers: amqp.Table{"omnibus-task": badinput.TaskName,
				"omnibus-published-ns": "yesterday", "omnibus-attempt": amqp.Table{"a": 1}, "x-delivery-count": int64(-3),
				"omnibus-typed-headers": "nothing,here", "omnibus-id": int32(5), "": "empty"}},
			{Body: []byte{0xff, 0xfe, 0x00}, Headers: amqp.Table{"omnibus-task": []byte(badinput.TaskName),
				"omnibus-key": []any{nil, 1.5}, "omnibus-attempt": int64(1) << 62}},
			{Body: []byte(`{"n":"not a number"}`), Headers: amqp.Table{"omnibus-task": badinput.TaskName}},
			{Body: []byte("no headers at all")},
			{Body: nil, Headers: amqp.Table{"omnibus-task": int64(42)}},
		}
		for _, p := range raw {
			// The topic is a fanout exchange of the same name.
			if err := ch.PublishWithContext(ctx, queue, "", false, false, p); err != nil {
				t.Fatalf("raw publish: %v", err)
			}
		}
		return len(raw)
	})
}
