package watermill_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
)

// A watermill router consumes an omnibus topic through the bridge: the
// handler's success acks the delivery, an error nacks it.
func ExampleNewSubscriber() {
	b := memory.New(memory.Options{}) // any bus.Broker, e.g. from bus.Open
	defer b.Close()

	sub, err := wmbridge.NewSubscriber(b, wmbridge.SubscriberConfig{Group: "mailer"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	handled := make(chan struct{})
	router.AddConsumerHandler("welcome-mail", "signups", sub, func(m *message.Message) error {
		fmt.Printf("mail %s (attempt %s)\n", m.Payload, m.Metadata.Get(wmbridge.MetadataAttempt))
		close(handled)
		return nil
	})
	go router.Run(context.Background())
	<-router.Running()

	if err := b.Publish(context.Background(), "signups", bus.NewMessage([]byte("ada@example.com"))); err != nil {
		log.Fatal(err)
	}
	<-handled
	router.Close()
	// Output: mail ada@example.com (attempt 1)
}

// An omnibus consumer runs on a watermill pub/sub: here watermill's
// in-process gochannel, in production watermill-kafka, watermill-amqp and
// the like.
func ExampleNewBroker() {
	pubSub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	b, err := wmbridge.NewBroker(pubSub, pubSub, wmbridge.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ctx, stop := context.WithCancel(context.Background())
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "sms"}, func(ctx context.Context, m *bus.Message) error {
		fmt.Printf("send %q to %s\n", m.Body, m.Key)
		stop()
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	m := bus.NewMessage([]byte("your code is 1234"))
	m.Key = "+15550100"
	if err := b.Publish(ctx, "sms", m); err != nil {
		log.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: send "your code is 1234" to +15550100
}
