package clients

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wmredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
)

// The watermill pub/subs are driven through omnibus's watermill bridge
// (adapters/watermill), which turns a watermill Publisher and Subscriber
// into a bus.Broker; its own cost per message is a map lookup and a list
// move for attempt counting.

// OpenWatermillAMQP connects watermill-amqp to rawURL with its durable
// pub/sub configuration (fanout exchange per topic, durable queue
// "<topic>_<group>", persistent messages) and publisher confirms on.
func OpenWatermillAMQP(ctx context.Context, rawURL string) (bus.Broker, error) {
	logger := watermill.NopLogger{}
	cfg := wmamqp.NewDurablePubSubConfig(rawURL, nil)
	cfg.Publish.ConfirmDelivery = true
	pub, err := wmamqp.NewPublisher(cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrUnreachable, err)
	}
	return wmbridge.NewBroker(pub, nil, wmbridge.Options{
		NewSubscriber: func(group string) (message.Subscriber, error) {
			return wmamqp.NewSubscriber(wmamqp.NewDurablePubSubConfig(rawURL,
				wmamqp.GenerateQueueNameTopicNameWithSuffix(group)), logger)
		},
		Features: bus.Features{Persistent: true},
	})
}

// CleanupWatermillAMQP deletes what watermill-amqp declared for topic.
func CleanupWatermillAMQP(ctx context.Context, rawURL, topic, group string) error {
	conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer ch.Close()
	_, qerr := ch.QueueDelete(topic+"_"+group, false, false, false)
	return errors.Join(qerr, ch.ExchangeDelete(topic, false, false))
}

// OpenWatermillRedis connects watermill-redisstream to rawURL with its
// default timings.
func OpenWatermillRedis(ctx context.Context, rawURL string) (bus.Broker, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrBadURL, err)
	}
	logger := watermill.NopLogger{}
	pub, err := wmredis.NewPublisher(wmredis.PublisherConfig{Client: redis.NewClient(o)}, logger)
	if err != nil {
		return nil, err
	}
	return wmbridge.NewBroker(pub, nil, wmbridge.Options{
		NewSubscriber: func(group string) (message.Subscriber, error) {
			return wmredis.NewSubscriber(wmredis.SubscriberConfig{
				Client:        redis.NewClient(o),
				ConsumerGroup: group,
				// Without these its reader goroutine outlives Close.
				DisableIndefiniteInitialBlock: true,
				ShouldStopOnReadErrors: func(err error) bool {
					return errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed)
				},
			}, logger)
		},
		Features: bus.Features{Persistent: true},
	})
}

// saramaConfig is watermill-kafka's Sarama set to the same durability as
// the other Kafka clients: acks from all in-sync replicas, new groups
// starting at the oldest offset.
func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "watermill"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	return c
}

// OpenWatermillKafka connects watermill-kafka (Sarama) to rawURL. Topics
// are created with the URL's partitions before first use, as for the
// other clients (the broker would create them with one).
func OpenWatermillKafka(ctx context.Context, rawURL string) (bus.Broker, error) {
	t, err := parseKafka(rawURL)
	if err != nil {
		return nil, err
	}
	logger := watermill.NopLogger{}
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: t.addrs, Marshaler: wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: saramaConfig()}, logger)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrUnreachable, err)
	}
	b, err := wmbridge.NewBroker(pub, nil, wmbridge.Options{
		NewSubscriber: func(group string) (message.Subscriber, error) {
			return wmkafka.NewSubscriber(wmkafka.SubscriberConfig{Brokers: t.addrs, Unmarshaler: wmkafka.DefaultMarshaler{},
				OverwriteSaramaConfig: saramaConfig(), ConsumerGroup: group}, logger)
		},
		Features: bus.Features{Persistent: true},
	})
	if err != nil {
		return nil, err
	}
	return &precreate{Broker: b, t: t}, nil
}

// precreate creates a Kafka topic before a wrapped broker first uses it.
type precreate struct {
	bus.Broker
	t *kafkaTarget
}

func (p *precreate) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if err := p.t.topic(ctx, topic); err != nil {
		return err
	}
	return p.Broker.Publish(ctx, topic, msgs...)
}

func (p *precreate) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if err := p.t.topic(ctx, topic); err != nil {
		return nil, err
	}
	return p.Broker.Subscribe(ctx, topic, opts)
}
