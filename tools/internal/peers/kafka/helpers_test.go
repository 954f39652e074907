package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func brokers(t testing.TB) []string { return brokertest.Kafka(t) }

func topicName(t testing.TB) string { return brokertest.Name(t) }

func admin(t testing.TB) *kgo.Client {
	return &kgo.Client{Addr: kgo.TCP(brokers(t)...), Timeout: 10 * time.Second}
}

// testOptions keep group rebalances quick, as the adapter's own tests do.
func testOptions(t testing.TB) kafka.Options {
	return kafka.Options{
		Brokers:           brokers(t),
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 200 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		DrainTimeout:      2 * time.Second,
		JoinBackoff:       200 * time.Millisecond,
		CommitInterval:    100 * time.Millisecond,
		FetchMaxWait:      250 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func connect(t testing.TB, opts kafka.Options) *kafka.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kafka.New(ctx, opts)
	if err != nil {
		t.Fatalf("kafka.New: %v", err)
	}
	return c
}
