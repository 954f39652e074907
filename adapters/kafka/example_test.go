package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
)

// A worker that sends SMS codes: the request handler publishes, a group of
// workers consumes with four handlers in flight, keeping each phone
// number's messages in order.
func Example() {
	ctx := context.Background()
	b, err := bus.Open(ctx, "kafka://127.0.0.1:9092?partitions=6")
	if err != nil {
		log.Fatal(err) // errors.Is(err, bus.ErrUnreachable) when no broker answers
	}
	defer b.Close()

	msg := bus.NewMessage([]byte(`{"code":"492817"}`))
	msg.Key = "+15550100" // one phone number, one partition, in order
	if err := b.Publish(ctx, "sms.send", msg); err != nil {
		log.Fatal(err)
	}

	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:        "sms.send",
		Subscribe:    bus.SubscribeOptions{Group: "sms-workers", MaxAttempts: 5},
		Concurrency:  4,
		OrderedByKey: true,
		Backoff:      bus.ExponentialBackoff(time.Second, time.Minute),
	}, func(ctx context.Context, m *bus.Message) error {
		fmt.Printf("sending %s to %s (attempt %d)\n", m.Body, m.Key, m.Attempt)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if err := c.Run(runCtx); err != nil {
		log.Fatal(err)
	}
}

// New takes Options directly; SASL and TLS apply to every connection.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := kafka.New(ctx, kafka.Options{
		Brokers:    []string{"kafka-1.internal:9093", "kafka-2.internal:9093"},
		SASL:       kafka.SASL{Mechanism: kafka.MechanismSCRAMSHA512, Username: "sms", Password: "from-a-secret-store"},
		Partitions: 12,
		// Failed messages are retried in place: a phone number's codes
		// never overtake each other.
		BlockingRetry: true,
	})
	switch {
	case errors.Is(err, bus.ErrAuth):
		log.Fatal("credentials refused: ", err)
	case err != nil:
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("%+v\n", c.Features())
}
