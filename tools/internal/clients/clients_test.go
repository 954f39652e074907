package clients_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/tools/internal/bench"
	"github.com/omnibus-mq/omnibus/tools/internal/clients"
)

// roundTrip publishes n messages (one batch and singles) through a
// client, then receives and acks them all through a second connection of
// the same client, checking every body arrives once.
func roundTrip(t *testing.T, open func(context.Context, string) (bus.Broker, error), url string,
	cleanup func(context.Context, string, string, string) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, err := open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	topic := fmt.Sprintf("omnibus-test-clients-%d", time.Now().UnixNano())
	if cleanup == nil {
		cleanup = bench.Cleanup
	}
	t.Cleanup(func() { _ = cleanup(context.Background(), url, topic, bench.Group) })
	s, err := sub.Subscribe(ctx, topic, bus.SubscribeOptions{Group: bench.Group, Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	want := map[string]bool{}
	var batch []*bus.Message
	for i := range n {
		body := fmt.Sprintf("message %02d", i)
		want[body] = true
		batch = append(batch, &bus.Message{Body: []byte(body)})
	}
	if err := pub.Publish(ctx, topic, batch[:20]...); err != nil {
		t.Fatal(err)
	}
	for _, m := range batch[20:] {
		if err := pub.Publish(ctx, topic, m); err != nil {
			t.Fatal(err)
		}
	}
	for len(want) > 0 {
		d, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("receive with %d left: %v", len(want), err)
		}
		body := string(d.Message().Body)
		if !want[body] {
			t.Fatalf("unexpected or repeated body %q", body)
		}
		delete(want, body)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Ack(ctx); !errors.Is(err, bus.ErrAlreadyAcked) {
			t.Fatalf("second Ack: %v, want ErrAlreadyAcked", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Receive(ctx); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Receive after Close: %v, want ErrClosed", err)
	}
}

func TestAMQP(t *testing.T) {
	url := brokertest.AMQP(t)
	t.Run("amqp091-go", func(t *testing.T) { roundTrip(t, clients.OpenAMQP, url, nil) })
	t.Run("watermill-amqp", func(t *testing.T) { roundTrip(t, clients.OpenWatermillAMQP, url, clients.CleanupWatermillAMQP) })
}

func TestRedis(t *testing.T) {
	url := brokertest.Redis(t)
	t.Run("go-redis", func(t *testing.T) { roundTrip(t, clients.OpenRedis, url, nil) })
	t.Run("watermill-redisstream", func(t *testing.T) { roundTrip(t, clients.OpenWatermillRedis, url, nil) })
}

func TestKafka(t *testing.T) {
	url := "kafka://" + strings.Join(brokertest.Kafka(t), ",") + "?partitions=2"
	t.Run("kafka-go", func(t *testing.T) { roundTrip(t, clients.OpenKafkaGo, url, nil) })
	t.Run("franz-go", func(t *testing.T) { roundTrip(t, clients.OpenFranz, url, nil) })
	t.Run("watermill-kafka", func(t *testing.T) { roundTrip(t, clients.OpenWatermillKafka, url, nil) })
}

func TestRocketMQ(t *testing.T) {
	url := brokertest.RocketMQ(t)
	t.Run("rocketmq-client-go", func(t *testing.T) {
		roundTrip(t, clients.OpenRocketMQ, url, clients.CleanupRocketMQ)
	})
}
