package rabbitmq_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// TestWatermillSuite runs watermill's universal pub/sub tests against the
// omnibus RabbitMQ adapter, handed to watermill through the bridge.
//
// Flags, as this adapter behaves: groups are durable queues bound to the
// topic's exchange (ConsumerGroups); delivery is at least once; a group's
// queue is FIFO for one subscriber with prefetch 1 (GuaranteedOrder with a
// single subscriber); queues and messages are durable (Persistent); a new
// subscriber of an existing group competes for what is left rather than
// replaying it.
func TestWatermillSuite(t *testing.T) {
	url := brokertest.AMQP(t)
	connect := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		b := connect(t, rabbitmq.Options{URL: url})
		t.Cleanup(func() { b.Close() })
		sub, err := wmbridge.NewSubscriber(b, wmbridge.SubscriberConfig{Group: group})
		if err != nil {
			t.Fatal(err)
		}
		return wmbridge.NewPublisher(b), sub
	}
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
	},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return connect(t, "") },
		connect)
}

// TestWatermillAMQPBackend runs omnibus's conformance suite on
// watermill-amqp (durable pub/sub, confirms on), wrapped as an omnibus
// backend by the bridge: users can plug either.
func TestWatermillAMQPBackend(t *testing.T) {
	url := brokertest.AMQP(t)
	attempts := wmbridge.NewAttemptLog(0)
	logger := watermill.NopLogger{}
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			pubCfg := wmamqp.NewDurablePubSubConfig(url, nil)
			pubCfg.Publish.ConfirmDelivery = true
			pub, err := wmamqp.NewPublisher(pubCfg, logger)
			if err != nil {
				t.Fatalf("watermill-amqp publisher: %v", err)
			}
			b, err := wmbridge.NewBroker(pub, nil, wmbridge.Options{
				NewSubscriber: func(group string) (message.Subscriber, error) {
					return wmamqp.NewSubscriber(wmamqp.NewDurablePubSubConfig(url,
						wmamqp.GenerateQueueNameTopicNameWithSuffix(group)), logger)
				},
				Features: bus.Features{OrderedPerKey: true, Persistent: true, MaxMessageSize: 1 << 20},
				Attempts: attempts,
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		Features: bus.Features{OrderedPerKey: true, Persistent: true, MaxMessageSize: 1 << 20},
		// watermill-amqp hands a subscription its next message only after
		// the previous one is settled.
		MaxUnsettled: 1,
		TopicPrefix:  "bustest-wmamqp",
	})
}
