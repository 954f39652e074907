package rocketmq_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// options returns the Options of the test cluster's URL
// (OMNIBUS_ROCKETMQ_URL), with quick rebalancing for tests.
func options(t testing.TB) rocketmq.Options {
	t.Helper()
	u, err := url.Parse(brokertest.RocketMQ(t))
	if err != nil {
		t.Fatal(err)
	}
	o, err := rocketmq.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func newBroker(t testing.TB, o rocketmq.Options) *rocketmq.Broker {
	t.Helper()
	b, err := rocketmq.New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	o := options(t)
	probe := newBroker(t, o)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := rocketmq.New(context.Background(), o)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return b
		},
		Features:    probe.Features(),
		TopicPrefix: "omnibus-test",
		Timeout:     30 * time.Second,
	})
}
