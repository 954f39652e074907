package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// brokers returns the addresses of the Kafka under test
// (OMNIBUS_KAFKA_BROKERS, default 127.0.0.1:9092); see brokertest.
func brokers(t testing.TB) []string { return brokertest.Kafka(t) }

// testOptions keep group rebalances quick: the broker's smallest session
// timeout (group.min.session.timeout.ms, 6s by default), frequent
// heartbeats and commits.
func testOptions(t testing.TB) kafka.Options { return optionsFor(brokers(t)) }

func optionsFor(addrs []string) kafka.Options {
	return kafka.Options{
		Brokers:           addrs,
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

func TestConformance(t *testing.T) {
	opts := testOptions(t)
	probe := connect(t, opts)
	features := probe.Features()
	probe.Close()
	bustest.Run(t, bustest.Config{
		Connect:  func(t testing.TB) bus.Broker { return connect(t, opts) },
		Features: features,
		// A member that dies without leaving holds its partitions until
		// its session times out; the others notice at their next heartbeat.
		RedeliveryWait: opts.SessionTimeout + opts.HeartbeatInterval,
	})
}

// TestConformanceBlockingRetry runs the suite through bus.Open with
// BlockingRetry. NackDelay is not declared although Nack honours the
// delay: the suite's delay tests also require a delayed message not to
// hold back the next one, which is what BlockingRetry is for.
func TestConformanceBlockingRetry(t *testing.T) {
	url := "kafka://" + strings.Join(brokers(t), ",") + "?blocking_retry=true" +
		"&session_timeout=6s&heartbeat_interval=200ms&rebalance_timeout=10s&drain_timeout=2s" +
		"&join_backoff=200ms&commit_interval=100ms&fetch_max_wait=250ms"
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := bus.Open(context.Background(), url)
			if err != nil {
				t.Fatalf("Open(%s): %v", url, err)
			}
			return b
		},
		Features:       bus.Features{OrderedPerKey: true, Persistent: true, MaxMessageSize: kafka.DefaultMaxMessageSize},
		RedeliveryWait: 6*time.Second + 200*time.Millisecond,
		TopicPrefix:    "bustest-blocking",
	})
}

// adminClient is a franz-go admin client of the brokers under test,
// closed when the test ends.
func adminClient(t testing.TB) *kadm.Client {
	t.Helper()
	cl, err := franz.NewClient(franz.SeedBrokers(brokers(t)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// produceRaw writes records as another Kafka client would: without
// omnibus's headers, each to the partition its Partition field names.
func produceRaw(t testing.TB, ctx context.Context, records ...*franz.Record) {
	t.Helper()
	cl, err := franz.NewClient(franz.SeedBrokers(brokers(t)...), franz.RequiredAcks(franz.AllISRAcks()),
		franz.RecordPartitioner(franz.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("raw write: %v", err)
	}
}
