package redisstream_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
)

// A worker that sends SMS verification codes: the request handler
// publishes, a Consumer with eight handlers in flight sends, failures are
// retried with backoff and dead-lettered to "sms.dlq" after five attempts.
// It needs a Redis server, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	b, err := bus.Open(ctx, "redis://localhost:6379/0?visibility_timeout=1m")
	if err != nil {
		log.Fatal(err) // matches bus.ErrUnreachable, bus.ErrAuth, bus.ErrBadURL
	}
	defer b.Close()

	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:       "sms",
		Concurrency: 8,
		Subscribe:   bus.SubscribeOptions{Group: "senders", Prefetch: 32},
	}, func(ctx context.Context, m *bus.Message) error {
		fmt.Printf("sending %s to %s (attempt %d)\n", m.Body, m.Key, m.Attempt)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	go c.Run(ctx)

	msg := bus.NewMessage([]byte("code 421337"))
	msg.Key = "+15550100"
	if err := b.Publish(ctx, "sms", msg); err != nil {
		log.Fatal(err)
	}

	shutdown, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.Shutdown(shutdown)
}

// New builds a Broker from Options; Trim then deletes what every group of
// a topic has acknowledged.
func ExampleNew() {
	ctx := context.Background()
	b, err := redisstream.New(ctx, redisstream.Options{
		Addr:              "localhost:6379",
		VisibilityTimeout: time.Minute,
		MaxMessageSize:    256 << 10,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	removed, err := b.Trim(ctx, "sms")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("trimmed", removed, "entries")
}
