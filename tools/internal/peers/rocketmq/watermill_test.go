package rocketmq_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
)

// TestWatermillSuite runs watermill's universal pub/sub tests on this
// adapter through the bridge. Each pub/sub the suite makes is a Broker of
// its own on the one cluster. The flags, as the adapter behaves with its
// defaults:
//
//   - ConsumerGroups: every group receives every message.
//   - ExactlyOnceDelivery false: delivery is at least once.
//   - GuaranteedOrder and GuaranteedOrderWithSingleSubscriber false:
//     topics have four queues and keyless messages published one by one
//     take them in turn, so there is no order across a topic, even for
//     one subscriber (order holds per key, which the suite does not use).
//   - Persistent: the broker stores messages (flushed to disk with the
//     SYNC_FLUSH that scripts/brokers sets).
//   - NewSubscriberReceivesOldMessages false: the suite's pub/subs share
//     the default group, whose members compete for what is left. (A new
//     group does read a topic from its first message.)
//   - ContextPreserved false: contexts do not travel through RocketMQ.
func TestWatermillSuite(t *testing.T) {
	o := options(t)
	connect := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		b, err := rocketmq.New(context.Background(), o)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		sub, err := wmbridge.NewSubscriber(b, wmbridge.SubscriberConfig{Group: group})
		if err != nil {
			t.Fatalf("NewSubscriber: %v", err)
		}
		return wmbridge.NewPublisher(b), sub
	}
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:                      true,
			ExactlyOnceDelivery:                 false,
			GuaranteedOrder:                     false,
			GuaranteedOrderWithSingleSubscriber: false,
			Persistent:                          true,
			NewSubscriberReceivesOldMessages:    false,
			ContextPreserved:                    false,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return connect(t, "") },
		connect,
	)
}
