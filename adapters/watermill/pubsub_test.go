package watermill_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
)

// memoryFeatures are what the memory backend, seen through the bridge,
// guarantees in the terms of watermill's suite:
//
//   - ConsumerGroups: every group gets every message, and a group created
//     (by SubscribeInitialize or a first Subscribe) keeps receiving after
//     its subscriptions close.
//   - ExactlyOnceDelivery false: delivery is at least once; a message
//     given back by a closing subscription is delivered again.
//   - GuaranteedOrder with GuaranteedOrderWithSingleSubscriber: a group's
//     queue is FIFO, so one subscriber with Prefetch 1 sees publish order;
//     competing subscribers do not.
//   - Persistent: in watermill's sense, messages outlive the pub/sub
//     instance that published or consumed them, because each instance is
//     a client of one shared in-process broker. (They do not outlive the
//     process; bus.Features.Persistent, which means surviving a broker
//     restart, is false.)
//   - NewSubscriberReceivesOldMessages false: a new subscriber of an
//     existing group competes for its messages, it does not replay them.
//   - RequireSingleInstance false: any number of clients share the broker.
//   - ContextPreserved false: contexts do not travel through a broker.
func memoryFeatures() tests.Features {
	return tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		RequireSingleInstance:               false,
		NewSubscriberReceivesOldMessages:    false,
		ContextPreserved:                    false,
	}
}

// memoryPubSubs returns the suite's constructors: every pub/sub instance
// is a new client of one memory broker, as instances of a networked
// pub/sub would be connections to one server.
func memoryPubSubs(t *testing.T) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	broker := memory.New(memory.Options{})
	t.Cleanup(func() { broker.Close() })
	connect := func(t *testing.T, cfg wmbridge.SubscriberConfig) (message.Publisher, message.Subscriber) {
		c := broker.Connect()
		t.Cleanup(func() { c.Close() })
		sub, err := wmbridge.NewSubscriber(c, cfg)
		if err != nil {
			t.Fatalf("NewSubscriber: %v", err)
		}
		return wmbridge.NewPublisher(c), sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
			return connect(t, wmbridge.SubscriberConfig{})
		},
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			return connect(t, wmbridge.SubscriberConfig{Group: group})
		}
}

// TestWatermillSuite runs watermill's universal pub/sub tests on the
// memory backend through NewPublisher and NewSubscriber.
func TestWatermillSuite(t *testing.T) {
	pubSub, groupPubSub := memoryPubSubs(t)
	tests.TestPubSub(t, memoryFeatures(), pubSub, groupPubSub)
}

// TestWatermillStress runs the suite ten times at once, watermill's own
// stress test, to shake out races in the bridge and the broker.
func TestWatermillStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test: runs without -short")
	}
	pubSub, groupPubSub := memoryPubSubs(t)
	tests.TestPubSubStressTest(t, memoryFeatures(), pubSub, groupPubSub)
}
