package watermill_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
)

// roundTripPrefetch is how many messages the inner watermill subscriber
// hands out ahead. The outer Broker cannot hold more unsettled deliveries
// than that, so it is above the largest Prefetch the suite asks for (5);
// it also keeps a delayed Nack from stalling the subscription.
const roundTripPrefetch = 8

// connectRoundTrip returns a Broker over a watermill pub/sub that is
// itself this package's Publisher and Subscriber over a memory client:
// omnibus → watermill → omnibus. Both directions of the bridge carry every
// message of the conformance suite.
func connectRoundTrip(t testing.TB, mem *memory.Broker, attempts *wmbridge.AttemptLog) bus.Broker {
	c := mem.Connect()
	t.Cleanup(func() { c.Close() })
	b, err := wmbridge.NewBroker(wmbridge.NewPublisher(c), nil, wmbridge.Options{
		NewSubscriber: func(group string) (message.Subscriber, error) {
			return wmbridge.NewSubscriber(c, wmbridge.SubscriberConfig{Group: group, Prefetch: roundTripPrefetch})
		},
		Features:   bus.Features{MaxMessageSize: mem.Features().MaxMessageSize},
		DelayNacks: true,
		Attempts:   attempts,
	})
	if err != nil {
		t.Fatalf("NewBroker: %v", err)
	}
	return b
}

// TestConformanceRoundTrip runs omnibus's conformance suite through both
// bridges. OrderedPerKey is not declared: the inner subscriber hands out
// several messages at once, so a single outer consumer may see them out
// of order. NackDelay holds because that inner subscriber keeps
// delivering while a delayed Nack waits.
func TestConformanceRoundTrip(t *testing.T) {
	mem := memory.New(memory.Options{MaxMessageSize: 1 << 20})
	t.Cleanup(func() { mem.Close() })
	attempts := wmbridge.NewAttemptLog(0)
	probe := connectRoundTrip(t, mem, attempts).(bus.FeatureReporter)
	bustest.Run(t, bustest.Config{
		Connect:  func(t testing.TB) bus.Broker { return connectRoundTrip(t, mem, attempts) },
		Features: probe.Features(),
	})
}
