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
	sub, err := b.Subscribe(context.Background(), topic, opts)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func publish(t *testing.T, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	if err := p.Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func receive(t testing.TB, sub bus.Subscription) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func ack(t testing.TB, d bus.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}
