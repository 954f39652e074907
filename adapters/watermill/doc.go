// Package watermill bridges omnibus and watermill
// (github.com/ThreeDotsLabs/watermill) both ways. Its name is watermill's
// own, so code that uses both imports this one under another name:
//
//	import wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
//
// # A watermill pub/sub as an omnibus broker
//
// NewBroker turns any watermill message.Publisher and message.Subscriber
// (watermill-amqp, watermill-kafka, watermill-redisstream, gochannel, ...)
// into a bus.Broker, so omnibus consumers and tasks run on it:
//
//	pubSub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
//	b, err := wmbridge.NewBroker(pubSub, pubSub, wmbridge.Options{})
//
// Watermill subscribers take their consumer group in their constructor, so
// a broker that serves more than one group is given a constructor:
//
//	b, err := wmbridge.NewBroker(pub, nil, wmbridge.Options{
//		NewSubscriber: func(group string) (message.Subscriber, error) {
//			return kafka.NewSubscriber(kafka.SubscriberConfig{ConsumerGroup: group, ...}, logger)
//		},
//		Features: bus.Features{Persistent: true},
//	})
//
// Features describe the wrapped pub/sub, which the bridge cannot inspect.
// Per-key order, for example, holds only where the pub/sub partitions by
// MetadataKey (watermill-kafka with a partitioning marshaler that returns
// it).
//
// Watermill has no delayed redelivery and no dead-letter topic in its
// subscriber contract; the Broker counts attempts per message UUID itself
// and dead-letters through the watermill publisher. Broker's doc says what
// that can and cannot promise.
//
// # An omnibus broker as a watermill pub/sub
//
// NewPublisher and NewSubscriber hand any bus.Publisher and bus.Subscriber
// to watermill code, such as a watermill message.Router or the CQRS
// component:
//
//	b, err := bus.Open(ctx, "amqp://localhost")
//	pub := wmbridge.NewPublisher(b)
//	sub, err := wmbridge.NewSubscriber(b, wmbridge.SubscriberConfig{Group: "billing"})
//	router.AddConsumerHandler("charge", "orders", sub, charge)
//
// A watermill Nack redelivers through the broker, by default without limit
// as watermill expects; SubscriberConfig.MaxAttempts turns on the broker's
// dead-lettering. The bridge keeps watermill's one-message-at-a-time flow
// unless SubscriberConfig.Prefetch asks for more.
//
// # Message mapping
//
// Message.ID is the watermill UUID; headers are metadata entries;
// Message.Key, PublishedAt and (on delivery to watermill code) Attempt
// travel in the reserved metadata keys MetadataKey, MetadataPublishedAt
// and MetadataAttempt.
//
// Through this bridge omnibus's own backends run watermill's universal
// pub/sub test suite (package pubsub/tests); see this package's tests.
package watermill
