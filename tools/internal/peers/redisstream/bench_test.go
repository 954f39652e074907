package redisstream_test

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The benchmarks compare, on one Redis server in one run, this adapter,
// go-redis used directly with the same pipelining, and
// watermill-redisstream, moving 1 KB messages:
//
//	go test -bench . -run '^$' ./adapters/redisstream/
//
// Streams are emptied between rounds of benchRound messages, untimed, so
// that a long run does not fill the server's memory.
const (
	benchBody  = 1024
	benchRound = 10_000
	// benchPrefetch is the read batch of both consumers that have one.
	benchPrefetch = 256
)

var benchPayload = bytes.Repeat([]byte{'x'}, benchBody)

// rounds runs fn for b.N messages in rounds of at most benchRound, with
// prepare and clean up untimed before and after each.
func rounds(b *testing.B, prepare func(n int), fn func(n int), clean func()) {
	b.SetBytes(benchBody)
	b.ReportAllocs()
	b.StopTimer()
	for done := 0; done < b.N; {
		n := min(benchRound, b.N-done)
		if prepare != nil {
			prepare(n)
		}
		b.StartTimer()
		fn(n)
		b.StopTimer()
		clean()
		done += n
	}
	b.StartTimer()
}

func benchClient(b *testing.B) (*redis.Client, redisstream.Options) {
	o := options(b)
	rdb := redis.NewClient(&redis.Options{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLS})
	b.Cleanup(func() { rdb.Close() })
	return rdb, o
}

func benchTopic(b *testing.B, rdb *redis.Client) string {
	topic := brokertest.Name(b)
	b.Cleanup(func() { rdb.Del(context.Background(), topic) })
	return topic
}

func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run("omnibus/batch="+strconv.Itoa(batch), func(b *testing.B) {
			rdb, o := benchClient(b)
			br := newBroker(b, o)
			topic := benchTopic(b, rdb)
			ctx := context.Background()
			rounds(b, nil, func(n int) {
				for i := 0; i < n; i += batch {
					msgs := make([]*bus.Message, min(batch, n-i))
					for j := range msgs {
						msgs[j] = bus.NewMessage(benchPayload)
					}
					if err := br.Publish(ctx, topic, msgs...); err != nil {
						b.Fatal(err)
					}
				}
			}, func() { rdb.Del(ctx, topic) })
		})
		b.Run("go-redis/batch="+strconv.Itoa(batch), func(b *testing.B) {
			rdb, _ := benchClient(b)
			topic := benchTopic(b, rdb)
			ctx := context.Background()
			rounds(b, nil, func(n int) {
				for i := 0; i < n; i += batch {
					pipe := rdb.Pipeline()
					for range min(batch, n-i) {
						pipe.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: rawFields()})
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}, func() { rdb.Del(ctx, topic) })
		})
		b.Run("watermill-redisstream/batch="+strconv.Itoa(batch), func(b *testing.B) {
			rdb, _ := benchClient(b)
			pub, err := wmredis.NewPublisher(wmredis.PublisherConfig{Client: rdb}, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			topic := benchTopic(b, rdb)
			ctx := context.Background()
			rounds(b, nil, func(n int) {
				for i := 0; i < n; i += batch {
					msgs := make([]*message.Message, min(batch, n-i))
					for j := range msgs {
						msgs[j] = message.NewMessage(watermill.NewUUID(), benchPayload)
					}
					if err := pub.Publish(topic, msgs...); err != nil {
						b.Fatal(err)
					}
				}
			}, func() { rdb.Del(ctx, topic) })
		})
	}
}

// rawFields is what the adapter stores for a message: ID, publish time
// and body.
func rawFields() []any {
	return []any{"i", bus.NewID(), "t", strconv.FormatInt(time.Now().UnixNano(), 10), "b", benchPayload}
}

// fill appends n messages to topic in pipelines of 1000, untimed.
func fill(b *testing.B, rdb *redis.Client, topic string, n int, fields func() []any) {
	ctx := context.Background()
	for i := 0; i < n; i += 1000 {
		pipe := rdb.Pipeline()
		for range min(1000, n-i) {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: fields()})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// emptyStream deletes the entries of a consumed stream, keeping its groups.
func emptyStream(rdb *redis.Client, topic string) {
	rdb.XTrimMaxLen(context.Background(), topic, 0)
}

func BenchmarkConsume(b *testing.B) {
	// The adapter's Ack returns once its XACK is done, so a handler waits a
	// round trip per message; throughput comes from handlers in flight
	// (a Consumer's Concurrency), whose Acks travel together.
	for _, workers := range []int{8, 64} {
		b.Run("omnibus/workers="+strconv.Itoa(workers), func(b *testing.B) {
			rdb, o := benchClient(b)
			br := newBroker(b, o)
			topic := benchTopic(b, rdb)
			sub, err := br.Subscribe(context.Background(), topic, bus.SubscribeOptions{Group: "bench", Prefetch: benchPrefetch})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			rounds(b, func(n int) { fill(b, rdb, topic, n, rawFields) }, func(n int) {
				var left atomic.Int64
				left.Store(int64(n))
				var wg sync.WaitGroup
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx := context.Background()
						for left.Add(-1) >= 0 {
							d, err := sub.Receive(ctx)
							if err != nil {
								b.Error(err)
								return
							}
							if err := d.Ack(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}, func() { emptyStream(rdb, topic) })
		})
	}

	b.Run("go-redis", func(b *testing.B) {
		rdb, _ := benchClient(b)
		topic := benchTopic(b, rdb)
		ctx := context.Background()
		if err := rdb.XGroupCreateMkStream(ctx, topic, "bench", "0").Err(); err != nil {
			b.Fatal(err)
		}
		rounds(b, func(n int) { fill(b, rdb, topic, n, rawFields) }, func(n int) {
			ids := make([]string, 0, benchPrefetch)
			for got := 0; got < n; {
				res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
					Group: "bench", Consumer: "raw", Streams: []string{topic, ">"}, Count: benchPrefetch, Block: time.Second,
				}).Result()
				if err != nil {
					b.Fatal(err)
				}
				ids = ids[:0]
				for _, m := range res[0].Messages {
					ids = append(ids, m.ID)
				}
				if err := rdb.XAck(ctx, topic, "bench", ids...).Err(); err != nil {
					b.Fatal(err)
				}
				got += len(ids)
			}
		}, func() { emptyStream(rdb, topic) })
	})

	b.Run("watermill-redisstream", func(b *testing.B) {
		rdb, o := benchClient(b)
		topic := benchTopic(b, rdb)
		sub, err := wmredis.NewSubscriber(wmredis.SubscriberConfig{
			Client:                        newWatermillRedisClient(b, o),
			ConsumerGroup:                 "bench",
			DisableIndefiniteInitialBlock: true,
		}, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		msgs, err := sub.Subscribe(context.Background(), topic)
		if err != nil {
			b.Fatal(err)
		}
		wmFields := func() []any {
			return []any{"_watermill_message_uuid", watermill.NewUUID(), "payload", benchPayload, "metadata", ""}
		}
		rounds(b, func(n int) { fill(b, rdb, topic, n, wmFields) }, func(n int) {
			for range n {
				select {
				case m := <-msgs:
					m.Ack()
				case <-time.After(30 * time.Second):
					b.Fatal("watermill-redisstream delivered nothing for 30s")
				}
			}
		}, func() { emptyStream(rdb, topic) })
	})
}
