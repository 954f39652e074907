package rabbitmq_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// Benchmarks of publish-with-confirms and consume-with-ack on the real
// broker, 1 KB persistent messages in durable queues, for this adapter and
// for watermill-amqp with ConfirmDelivery on:
//
//	go test -run '^$' -bench . -benchtime 5000x ./adapters/rabbitmq/
//
// msgs/s is reported beside ns/op; an op is one message.

const benchSize = 1024

func benchBody() []byte {
	b := make([]byte, benchSize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func BenchmarkPublish(b *testing.B) {
	url := brokertest.AMQP(b)
	ctx := context.Background()
	body := benchBody()
	for _, batch := range []int{1, 100} {
		b.Run("omnibus/batch="+strconv.Itoa(batch), func(b *testing.B) {
			br := connect(b, rabbitmq.Options{URL: url})
			defer br.Close()
			topic := "bench-pub-" + bus.NewID()
			msgs := make([]*bus.Message, batch)
			b.SetBytes(benchSize)
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				n := min(batch, b.N-sent)
				for i := range n {
					msgs[i] = &bus.Message{Body: body}
				}
				if err := br.Publish(ctx, topic, msgs[:n]...); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b)
		})
		b.Run("watermill-amqp/batch="+strconv.Itoa(batch), func(b *testing.B) {
			pub := watermillPublisher(b, url)
			topic := "bench-wpub-" + bus.NewID()
			msgs := make([]*message.Message, batch)
			b.SetBytes(benchSize)
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				n := min(batch, b.N-sent)
				for i := range n {
					msgs[i] = message.NewMessage(watermill.NewUUID(), body)
				}
				if err := pub.Publish(topic, msgs[:n]...); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b)
		})
	}
	// Many goroutines with one message per call, as request handlers
	// publish: confirms of concurrent calls share the channels' windows.
	b.Run("omnibus/parallel=32", func(b *testing.B) {
		br := connect(b, rabbitmq.Options{URL: url})
		defer br.Close()
		topic := "bench-ppub-" + bus.NewID()
		b.SetBytes(benchSize)
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := br.Publish(ctx, topic, &bus.Message{Body: body}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRate(b)
	})
	b.Run("watermill-amqp/parallel=32", func(b *testing.B) {
		pub := watermillPublisher(b, url)
		topic := "bench-wppub-" + bus.NewID()
		b.SetBytes(benchSize)
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

func BenchmarkConsume(b *testing.B) {
	url := brokertest.AMQP(b)
	ctx := context.Background()
	body := benchBody()
	b.Run("omnibus/prefetch=100", func(b *testing.B) {
		br := connect(b, rabbitmq.Options{URL: url})
		defer br.Close()
		topic := "bench-sub-" + bus.NewID()
		sub, err := br.Subscribe(ctx, topic, bus.SubscribeOptions{Prefetch: 100})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		for sent := 0; sent < b.N; sent += 500 {
			msgs := make([]*bus.Message, min(500, b.N-sent))
			for i := range msgs {
				msgs[i] = &bus.Message{Body: body}
			}
			if err := br.Publish(ctx, topic, msgs...); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(benchSize)
		b.ResetTimer()
		for range b.N {
			d, err := sub.Receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("watermill-amqp/prefetch=100", func(b *testing.B) {
		topic := "bench-wsub-" + bus.NewID()
		cfg := wmamqp.NewDurablePubSubConfig(url, wmamqp.GenerateQueueNameTopicNameWithSuffix("bench"))
		cfg.Consume.Qos.PrefetchCount = 100
		sub, err := wmamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		if err := sub.SubscribeInitialize(topic); err != nil {
			b.Fatal(err)
		}
		pub := watermillPublisher(b, url)
		for sent := 0; sent < b.N; sent += 500 {
			msgs := make([]*message.Message, min(500, b.N-sent))
			for i := range msgs {
				msgs[i] = message.NewMessage(watermill.NewUUID(), body)
			}
			if err := pub.Publish(topic, msgs...); err != nil {
				b.Fatal(err)
			}
		}
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.SetBytes(benchSize)
		b.ResetTimer()
		in, err := sub.Subscribe(cctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			m := <-in
			m.Ack()
		}
		reportRate(b)
	})
}

func watermillPublisher(b *testing.B, url string) *wmamqp.Publisher {
	cfg := wmamqp.NewDurablePubSubConfig(url, nil)
	cfg.Publish.ConfirmDelivery = true
	pub, err := wmamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pub.Close() })
	return pub
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
