package clients

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Redis is a Redis Streams connection through go-redis directly: a topic
// is a stream, a group a consumer group on it. Publish pipelines one XADD
// per message in one round trip; a subscription reads with XREADGROUP
// COUNT (up to 100, within its window) and acks through one goroutine
// that gathers the acks waiting into one XACK, each Ack returning after
// the reply, as the redisstream adapter's do.
type Redis struct {
	c    *redis.Client
	subs subs
}

// OpenRedis connects to rawURL (redis:// or rediss://).
func OpenRedis(ctx context.Context, rawURL string) (bus.Broker, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrBadURL, err)
	}
	o.PoolSize = 64
	c := redis.NewClient(o)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %v", bus.ErrUnreachable, err)
	}
	return &Redis{c: c}, nil
}

// Publish adds msgs to the stream in one pipelined round trip.
func (b *Redis) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if len(msgs) == 1 {
		return b.c.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []any{"d", msgs[0].Body}}).Err()
	}
	_, err := b.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range msgs {
			p.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []any{"d", m.Body}})
		}
		return nil
	})
	return err
}

type redisAck struct {
	id   string
	done chan error
}

// Subscribe joins the group (made at the stream's start if new) as a
// consumer of a random name.
func (b *Redis) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	opts = driver.Defaults(topic, opts)
	if err := b.c.XGroupCreateMkStream(ctx, topic, opts.Group, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil, err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	consumer := "raw-" + hex.EncodeToString(rnd[:])
	acks := make(chan redisAck, opts.Prefetch)
	f := newFeed(opts.Prefetch, func() error { return nil })
	if err := b.subs.add(f); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	f.stop = func() error { cancel(); return nil }
	f.wg.Add(2)
	go func() { // fetcher
		defer f.wg.Done()
		for {
			n := f.take(bg, 100)
			if n == 0 {
				return
			}
			res, err := b.c.XReadGroup(bg, &redis.XReadGroupArgs{Group: opts.Group, Consumer: consumer,
				Streams: []string{topic, ">"}, Count: int64(n), Block: 100 * time.Millisecond}).Result()
			got := 0
			if err == nil {
				for _, s := range res {
					for _, m := range s.Messages {
						body, _ := m.Values["d"].(string)
						id := m.ID
						got++
						f.push(&delivery{msg: bus.Message{Body: []byte(body)}, ack: func(ctx context.Context) error {
							done := make(chan error, 1)
							select {
							case acks <- redisAck{id, done}:
							case <-f.done:
								return bus.ErrClosed
							}
							select {
							case err := <-done:
								return err
							case <-ctx.Done():
								return ctx.Err()
							}
						}})
					}
				}
			}
			f.give(n - got)
			if err != nil && !errors.Is(err, redis.Nil) {
				if bg.Err() != nil || f.closing.Load() {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	go func() { // acker
		defer f.wg.Done()
		for {
			var batch []redisAck
			select {
			case a := <-acks:
				batch = append(batch, a)
			case <-f.done:
				return
			}
		gather:
			for len(batch) < 256 {
				select {
				case a := <-acks:
					batch = append(batch, a)
				default:
					break gather
				}
			}
			ids := make([]string, len(batch))
			for i, a := range batch {
				ids[i] = a.id
			}
			err := b.c.XAck(bg, topic, opts.Group, ids...).Err()
			for _, a := range batch {
				a.done <- err
			}
		}
	}()
	return f, nil
}

// Close closes the subscriptions and the client.
func (b *Redis) Close() error {
	return errors.Join(b.subs.closeAll(), b.c.Close())
}
