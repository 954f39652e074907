package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	kgo "github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
)

// Throughput of producing and consuming on the real broker, for this
// adapter, for kafka-go used directly with the same settings, and for
// watermill-kafka (Sarama), in one run:
//
//	go test -bench . -run '^$' ./adapters/kafka/
//
// Every variant writes to a topic of three partitions and waits for
// acknowledgement by all in-sync replicas. An op is one message; msgs/s is
// reported beside ns/op and MB/s.
//
//   - Produce/batch=100: one goroutine, 100 messages per call.
//   - Produce/parallel: 16 goroutines per core, one message per call, as
//     request handlers publish.
//   - Consume: receive and acknowledge messages published beforehand, from
//     a new consumer group; the clock starts at the first message, so
//     joining the group is not counted.

var benchSizes = []struct {
	name string
	size int
}{{"100B", 100}, {"1KB", 1024}}

const benchPartitions = 3

func benchBody(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// benchTopic creates a fresh topic of benchPartitions partitions.
func benchTopic(b *testing.B) string {
	b.Helper()
	topic := topicName(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := admin(b).CreateTopics(ctx, &kgo.CreateTopicsRequest{Topics: []kgo.TopicConfig{
		{Topic: topic, NumPartitions: benchPartitions, ReplicationFactor: -1},
	}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		b.Fatal(err)
	}
	return topic
}

func benchOptions(b *testing.B) kafka.Options {
	o := testOptions(b)
	o.CommitInterval = time.Second
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	return o
}

// rawWriter is kafka-go configured as this adapter configures it.
func rawWriter(b *testing.B) *kgo.Writer {
	return &kgo.Writer{
		Addr:         kgo.TCP(brokers(b)...),
		Balancer:     &kgo.Murmur2Balancer{},
		BatchSize:    1000,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kgo.RequireAll,
		// The topic exists; this lets the writer fetch metadata it lacks.
		AllowAutoTopicCreation: true,
	}
}

func wmPublisher(b *testing.B) message.Publisher {
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers: brokers(b), Marshaler: wmMarshaler, OverwriteSaramaConfig: saramaConfig(),
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	return pub
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// batches calls send with batches of up to n of the b.N messages.
func batches(b *testing.B, n int, send func(count int) error) {
	for sent := 0; sent < b.N; sent += n {
		if err := send(min(n, b.N-sent)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProduce(b *testing.B) {
	ctx := context.Background()
	for _, sz := range benchSizes {
		body := benchBody(sz.size)
		b.Run("batch=100/"+sz.name+"/omnibus", func(b *testing.B) {
			c := connect(b, benchOptions(b))
			defer c.Close()
			topic := benchTopic(b)
			msgs := make([]*bus.Message, 100)
			b.SetBytes(int64(sz.size))
			b.ResetTimer()
			batches(b, 100, func(n int) error {
				for i := range n {
					msgs[i] = &bus.Message{Body: body}
				}
				return c.Publish(ctx, topic, msgs[:n]...)
			})
			reportRate(b)
		})
		b.Run("batch=100/"+sz.name+"/kafka-go", func(b *testing.B) {
			w := rawWriter(b)
			defer w.Close()
			topic := benchTopic(b)
			msgs := make([]kgo.Message, 100)
			b.SetBytes(int64(sz.size))
			b.ResetTimer()
			batches(b, 100, func(n int) error {
				for i := range n {
					msgs[i] = kgo.Message{Topic: topic, Value: body}
				}
				return w.WriteMessages(ctx, msgs[:n]...)
			})
			reportRate(b)
		})
		b.Run("batch=100/"+sz.name+"/watermill-kafka", func(b *testing.B) {
			pub := wmPublisher(b)
			defer pub.Close()
			topic := benchTopic(b)
			msgs := make([]*message.Message, 100)
			b.SetBytes(int64(sz.size))
			b.ResetTimer()
			batches(b, 100, func(n int) error {
				for i := range n {
					msgs[i] = message.NewMessage(watermill.NewUUID(), body)
				}
				return pub.Publish(topic, msgs[:n]...)
			})
			reportRate(b)
		})

		b.Run("parallel/"+sz.name+"/omnibus", func(b *testing.B) {
			c := connect(b, benchOptions(b))
			defer c.Close()
			topic := benchTopic(b)
			b.SetBytes(int64(sz.size))
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.Publish(ctx, topic, &bus.Message{Body: body}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
		b.Run("parallel/"+sz.name+"/kafka-go", func(b *testing.B) {
			w := rawWriter(b)
			defer w.Close()
			topic := benchTopic(b)
			b.SetBytes(int64(sz.size))
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.WriteMessages(ctx, kgo.Message{Topic: topic, Value: body}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
		b.Run("parallel/"+sz.name+"/watermill-kafka", func(b *testing.B) {
			pub := wmPublisher(b)
			defer pub.Close()
			topic := benchTopic(b)
			b.SetBytes(int64(sz.size))
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// fill writes n messages of body to a fresh topic, outside the clock.
func fill(b *testing.B, n int, body []byte) string {
	b.Helper()
	topic := benchTopic(b)
	w := rawWriter(b)
	defer w.Close()
	msgs := make([]kgo.Message, 0, 1000)
	for sent := 0; sent < n; sent += len(msgs) {
		msgs = msgs[:0]
		for range min(1000, n-sent) {
			// An omnibus ID header, so every variant sees the same records.
			msgs = append(msgs, kgo.Message{Topic: topic, Value: body, Headers: []kgo.Header{{Key: kafka.HeaderID, Value: []byte(bus.NewID())}}})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	return topic
}

func BenchmarkConsume(b *testing.B) {
	ctx := context.Background()
	for _, sz := range benchSizes {
		body := benchBody(sz.size)
		b.Run(sz.name+"/omnibus", func(b *testing.B) {
			topic := fill(b, b.N, body)
			c := connect(b, benchOptions(b))
			defer c.Close()
			sub, err := c.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "bench", Prefetch: 256})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.size))
			for i := range b.N {
				d, err := sub.Receive(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := d.Ack(ctx); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					b.ResetTimer()
				}
			}
			reportRate(b)
		})
		b.Run(sz.name+"/kafka-go", func(b *testing.B) {
			topic := fill(b, b.N, body)
			r := kgo.NewReader(kgo.ReaderConfig{
				Brokers:           brokers(b),
				GroupID:           "bench",
				Topic:             topic,
				MinBytes:          1,
				MaxBytes:          2 << 20,
				MaxWait:           250 * time.Millisecond,
				StartOffset:       kgo.FirstOffset,
				CommitInterval:    time.Second,
				HeartbeatInterval: 200 * time.Millisecond,
				SessionTimeout:    6 * time.Second,
			})
			defer r.Close()
			b.SetBytes(int64(sz.size))
			for i := range b.N {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := r.CommitMessages(ctx, m); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					b.ResetTimer()
				}
			}
			reportRate(b)
		})
		b.Run(sz.name+"/watermill-kafka", func(b *testing.B) {
			topic := fill(b, b.N, body)
			sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
				Brokers: brokers(b), Unmarshaler: wmMarshaler, OverwriteSaramaConfig: saramaConfig(),
				ConsumerGroup: "bench",
			}, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			msgs, err := sub.Subscribe(cctx, topic)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.size))
			timeout := time.After(10 * time.Minute)
			var got atomic.Int64
			for i := range b.N {
				select {
				case m := <-msgs:
					m.Ack()
					got.Add(1)
				case <-timeout:
					b.Fatalf("only %d of %d messages consumed", got.Load(), b.N)
				}
				if i == 0 {
					b.ResetTimer()
				}
			}
			reportRate(b)
		})
	}
}
