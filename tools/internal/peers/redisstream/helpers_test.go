package redisstream_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func options(t testing.TB) redisstream.Options {
	t.Helper()
	u, err := url.Parse(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	o, err := redisstream.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func newBroker(t testing.TB, o redisstream.Options) *redisstream.Broker {
	t.Helper()
	b, err := redisstream.New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func topicName(t *testing.T) string { return brokertest.Name(t) }

func subscribe(t *testing.T, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	return brokertest.Subscribe(t, b, topic, opts)
}

func publish(t *testing.T, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	brokertest.Publish(t, p, topic, msgs...)
}

func receive(t testing.TB, sub bus.Subscription) bus.Delivery {
	t.Helper()
	return brokertest.Receive(t, sub, 20*time.Second)
}

func ack(t testing.TB, d bus.Delivery) {
	t.Helper()
	brokertest.Ack(t, d)
}
