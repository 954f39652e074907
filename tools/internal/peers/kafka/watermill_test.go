package kafka_test

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
)

// TestWatermillSuite runs watermill's universal pub/sub tests against this
// adapter, handed to watermill through the bridge.
//
// Flags, as the adapter behaves with its defaults: each group gets every
// message (ConsumerGroups); delivery is at least once; topics have three
// partitions and keyless messages published one by one land on any of
// them, so there is no order across a topic, not even for one subscriber
// (order holds per key, which the suite does not test); messages are
// stored by the broker (Persistent); a new subscriber of an existing group
// competes for what is left rather than replaying it.
//
// ForceShort: TestConcurrentSubscribe otherwise joins 50 members to one
// group one after another, and each join is a rebalance that stops and
// restarts every member already in (kafka-go's group protocol is eager),
// while each holds a delivery the test reads only after the last join;
// that takes one to three minutes here, under -race, for what 10 members
// show as well.
func TestWatermillSuite(t *testing.T) {
	opts := testOptions(t)
	connect := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		c := connect(t, opts)
		t.Cleanup(func() { c.Close() })
		sub, err := wmbridge.NewSubscriber(c, wmbridge.SubscriberConfig{Group: group})
		if err != nil {
			t.Fatal(err)
		}
		return wmbridge.NewPublisher(c), sub
	}
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     false,
		GuaranteedOrderWithSingleSubscriber: false,
		Persistent:                          true,
		ForceShort:                          true,
	},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return connect(t, "") },
		connect)
}

// saramaConfig is watermill-kafka's configuration for the comparisons:
// acknowledgement by all in-sync replicas as this adapter asks (sarama's
// default waits for the leader only), new groups starting at the oldest
// offset as this adapter's do (sarama's default, the newest, loses what was
// published before a group's first join), the Kafka 2.1 protocol baseline
// that Kafka 4 keeps (watermill-kafka's own default, 1.0, also works with
// Kafka 4.1), and the broker's smallest session timeout.
func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "watermill"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 10
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	return c
}

// wmMarshaler keys records by the omnibus message key, which the bridge
// carries in metadata, so watermill-kafka partitions by key too.
var wmMarshaler = wmkafka.NewWithPartitioningMarshaler(func(topic string, m *message.Message) (string, error) {
	return m.Metadata.Get(wmbridge.MetadataKey), nil
})

// wmKafkaMax is the largest omnibus message watermill-kafka takes: sarama
// refuses records over Producer.MaxMessageBytes (1,000,000), counting the
// headers the marshaler adds.
const wmKafkaMax = 960 << 10

// TestWatermillKafkaBackend runs omnibus's conformance suite on
// watermill-kafka (Sarama), wrapped as an omnibus backend by the bridge.
//
// Flags: watermill-kafka hands a partition's next message out only after
// the previous one is settled (MaxUnsettled 1: its topics, created by the
// broker on first use, have one partition); per key order holds for the
// same reason; messages are acknowledged by all in-sync replicas
// (Persistent). Nack redelivers at once: a delayed Nack would hold back
// the whole partition, so NackDelay is not declared.
//
// ConsumerGracefulShutdown is a known failure: Sarama commits offsets on an
// interval, so the offset of a message acked just before the subscription
// closes may not be committed, and the message comes back.
// For the same reason, other acknowledged messages can come back while the
// group rebalances: the suite is told so (AckedRedelivered), and reports
// such duplicates instead of failing on them.
func TestWatermillKafkaBackend(t *testing.T) {
	addrs := brokers(t)
	attempts := wmbridge.NewAttemptLog(0)
	logger := watermill.NopLogger{}
	features := bus.Features{OrderedPerKey: true, Persistent: true, MaxMessageSize: wmKafkaMax}
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
				Brokers: addrs, Marshaler: wmMarshaler, OverwriteSaramaConfig: saramaConfig(),
			}, logger)
			if err != nil {
				t.Fatalf("watermill-kafka publisher: %v", err)
			}
			b, err := wmbridge.NewBroker(pub, nil, wmbridge.Options{
				NewSubscriber: func(group string) (message.Subscriber, error) {
					return wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
						Brokers: addrs, Unmarshaler: wmMarshaler, OverwriteSaramaConfig: saramaConfig(),
						ConsumerGroup: group,
					}, logger)
				},
				Features: features,
				Attempts: attempts,
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		Features:       features,
		MaxUnsettled:   1,
		RedeliveryWait: 6 * time.Second,
		TopicPrefix:    "bustest-wmkafka",
		KnownFailures: map[string]string{
			// Seen in CI runs, not every time.
			"ConsumerGracefulShutdown": "Sarama commits offsets on an interval, so a message acked just before " +
				"the subscription closes can be delivered again",
		},
		// Seen in CI runs under load: a message of CompetingConsumers
		// received twice, two of ConsumerRetriesAndDeadLetters run a fourth
		// time after succeeding on their third.
		AckedRedelivered: "Sarama commits offsets on an interval, so messages acked since the last commit " +
			"are delivered again when the group rebalances",
	})
}
