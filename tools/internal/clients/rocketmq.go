package clients

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/admin"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// RocketMQ is a RocketMQ connection through Apache's Go client,
// rocketmq-client-go v2, used directly: SendSync for every message (a
// Publish of several sends them as one batch message, which the broker
// stores as one write), and per subscription a push consumer of the group
// "<topic>.<group>" (from the first offset) whose callback returns once
// the message it was given is acked. Topics are created with 4 queues on
// the broker at OMNIBUS_ROCKETMQ_BROKER_ADDR (default 127.0.0.1:10911).
type RocketMQ struct {
	ns    []string
	prod  rocketmq.Producer
	admin admin.Admin
	mu    sync.Mutex
	made  map[string]bool
	subs  subs
}

// OpenRocketMQ connects to rawURL (rocketmq://nameserver:port).
func OpenRocketMQ(ctx context.Context, rawURL string) (bus.Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "rocketmq" || u.Host == "" {
		return nil, fmt.Errorf("%w: want rocketmq://host:port", bus.ErrBadURL)
	}
	rlog.SetLogLevel("error")
	ns := strings.Split(u.Host, ",")
	ad, err := admin.NewAdmin(admin.WithResolver(primitive.NewPassthroughResolver(ns)))
	if err != nil {
		return nil, err
	}
	// The client keeps one registry per process, keyed by group and
	// instance: every connection needs names of its own.
	inst := uniqueName("omnibus-raw")
	p, err := rocketmq.NewProducer(producer.WithNsResolver(primitive.NewPassthroughResolver(ns)),
		producer.WithGroupName(inst), producer.WithInstanceName(inst),
		producer.WithRetry(2), producer.WithSendMsgTimeout(10*time.Second))
	if err != nil {
		ad.Close()
		return nil, err
	}
	if err := p.Start(); err != nil {
		ad.Close()
		return nil, fmt.Errorf("%w: %v", bus.ErrUnreachable, err)
	}
	return &RocketMQ{ns: ns, prod: p, admin: ad, made: map[string]bool{}}, nil
}

func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (b *RocketMQ) topic(ctx context.Context, topic string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.made[topic] {
		return nil
	}
	if err := b.admin.CreateTopic(ctx, admin.WithTopicCreate(topic), admin.WithBrokerAddrCreate(brokerAddr()),
		admin.WithReadQueueNums(4), admin.WithWriteQueueNums(4)); err != nil {
		return err
	}
	// The name server learns of the topic with the broker's next
	// registration; wait for its route.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if qs, err := b.admin.FetchPublishMessageQueues(ctx, topic); err == nil && len(qs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rocketmq: topic %s has no route after 30s", topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.made[topic] = true
	return nil
}

// Publish sends msgs synchronously and checks each result is SEND_OK.
func (b *RocketMQ) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if err := b.topic(ctx, topic); err != nil {
		return err
	}
	rms := make([]*primitive.Message, len(msgs))
	for i, m := range msgs {
		rms[i] = primitive.NewMessage(topic, m.Body)
	}
	res, err := b.prod.SendSync(ctx, rms...)
	if err != nil {
		return err
	}
	if res.Status != primitive.SendOK {
		return fmt.Errorf("rocketmq: send status %d", res.Status)
	}
	return nil
}

// Subscribe starts a push consumer of the group "<topic>.<group>".
func (b *RocketMQ) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	opts = driver.Defaults(topic, opts)
	if err := b.topic(ctx, topic); err != nil {
		return nil, err
	}
	c, err := rocketmq.NewPushConsumer(consumer.WithNsResolver(primitive.NewPassthroughResolver(b.ns)),
		consumer.WithGroupName(strings.NewReplacer(".", "_").Replace(topic+"."+opts.Group)),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset), consumer.WithInstance(uniqueName("omnibus-raw")),
		consumer.WithConsumeGoroutineNums(opts.Prefetch), consumer.WithPullBatchSize(32))
	if err != nil {
		return nil, err
	}
	f := newFeed(opts.Prefetch, func() error { return c.Shutdown() })
	if err := c.Subscribe(topic, consumer.MessageSelector{}, func(ctx context.Context, ms ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		for _, m := range ms {
			if f.take(context.Background(), 1) == 0 {
				return consumer.ConsumeRetryLater, bus.ErrClosed
			}
			settled := make(chan bool, 1)
			f.push(&delivery{msg: bus.Message{Body: m.Body},
				ack:  func(context.Context) error { settled <- true; return nil },
				nack: func() { settled <- false }})
			select {
			case ok := <-settled:
				if !ok {
					return consumer.ConsumeRetryLater, nil
				}
			case <-f.done:
				return consumer.ConsumeRetryLater, bus.ErrClosed
			}
		}
		return consumer.ConsumeSuccess, nil
	}); err != nil {
		return nil, err
	}
	if err := b.subs.add(f); err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Close closes the subscriptions, the producer and the admin client.
func (b *RocketMQ) Close() error {
	return errors.Join(b.subs.closeAll(), b.prod.Shutdown(), b.admin.Close())
}

// CleanupRocketMQ deletes topic from the broker and the name server.
func CleanupRocketMQ(ctx context.Context, rawURL, topic, group string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	ad, err := admin.NewAdmin(admin.WithResolver(primitive.NewPassthroughResolver(strings.Split(u.Host, ","))))
	if err != nil {
		return err
	}
	defer ad.Close()
	return ad.DeleteTopic(ctx, admin.WithTopicDelete(topic), admin.WithBrokerAddrDelete(brokerAddr()))
}

func brokerAddr() string {
	if a := os.Getenv("OMNIBUS_ROCKETMQ_BROKER_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:10911"
}
