package clients

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// kafkaTarget is what the Kafka clients read from a kafka:// URL: the
// bootstrap addresses and the partitions of the topics they create.
type kafkaTarget struct {
	addrs      []string
	partitions int
	mu         sync.Mutex
	made       map[string]bool
}

func parseKafka(rawURL string) (*kafkaTarget, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "kafka" {
		return nil, fmt.Errorf("%w: want kafka://host:port", bus.ErrBadURL)
	}
	t := &kafkaTarget{partitions: 1, made: map[string]bool{}}
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			t.addrs = append(t.addrs, h)
		}
	}
	if p := u.Query().Get("partitions"); p != "" {
		if t.partitions, err = strconv.Atoi(p); err != nil || t.partitions < 1 {
			return nil, fmt.Errorf("%w: partitions %q", bus.ErrBadURL, p)
		}
	}
	return t, nil
}

// topic creates topic with the URL's partitions (replication 1) once, an
// existing topic being used as it is, and waits until every partition has
// a leader, as the kafka adapter does, so the first publish does not race
// the election. A broker that is briefly unavailable is asked again for up
// to 30 seconds.
func (t *kafkaTarget) topic(ctx context.Context, topic string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.made[topic] {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(t.addrs...), Timeout: 10 * time.Second}
	created := false
	for {
		err := func() error {
			if !created {
				res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
					{Topic: topic, NumPartitions: t.partitions, ReplicationFactor: 1}}})
				if err != nil {
					return err
				}
				if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
					return err
				}
				created = true
			}
			md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
			if err != nil {
				return err
			}
			for _, mt := range md.Topics {
				if mt.Error != nil {
					return mt.Error
				}
				if len(mt.Partitions) < t.partitions {
					return fmt.Errorf("topic %s has %d of %d partitions", topic, len(mt.Partitions), t.partitions)
				}
				for _, p := range mt.Partitions {
					if p.Error != nil || p.Leader.Host == "" {
						return fmt.Errorf("topic %s partition %d has no leader yet", topic, p.ID)
					}
				}
			}
			return nil
		}()
		if err == nil {
			t.made[topic] = true
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create topic %s: %w", topic, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// KafkaGo is a Kafka connection through segmentio/kafka-go directly: a
// Writer with acks=all and a 1 ms batch timeout (the kafka adapter's
// settings) spreading messages over partitions round robin, and per
// subscription a group Reader ("<topic>.<group>") whose commits are sent
// every 100 ms. The Reader commits the highest offset acked on a
// partition, whether or not the ones before it were: faster than the
// adapter's contiguous commits, and weaker.
type KafkaGo struct {
	t    *kafkaTarget
	w    *kafka.Writer
	subs subs
}

// OpenKafkaGo connects to rawURL (kafka://host:port[?partitions=N]).
func OpenKafkaGo(ctx context.Context, rawURL string) (bus.Broker, error) {
	t, err := parseKafka(rawURL)
	if err != nil {
		return nil, err
	}
	w := &kafka.Writer{Addr: kafka.TCP(t.addrs...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		BatchSize: 1000, Balancer: &kafka.RoundRobin{}}
	return &KafkaGo{t: t, w: w}, nil
}

// Publish writes msgs and waits for every partition leader's acks=all.
func (b *KafkaGo) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if err := b.t.topic(ctx, topic); err != nil {
		return err
	}
	kms := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		kms[i] = kafka.Message{Topic: topic, Value: m.Body}
	}
	return b.w.WriteMessages(ctx, kms...)
}

// Subscribe reads the topic as a member of the group "<topic>.<group>".
func (b *KafkaGo) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	opts = driver.Defaults(topic, opts)
	if err := b.t.topic(ctx, topic); err != nil {
		return nil, err
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.t.addrs, GroupID: topic + "." + opts.Group, Topic: topic,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset,
		CommitInterval: 100 * time.Millisecond, QueueCapacity: opts.Prefetch,
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second})
	f := newFeed(opts.Prefetch, r.Close)
	if err := b.subs.add(f); err != nil {
		r.Close()
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	stop := f.stop
	f.stop = func() error { cancel(); return stop() }
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		go func() { <-f.done; cancel() }()
		for {
			if f.take(bg, 1) == 0 {
				return
			}
			m, err := r.FetchMessage(bg)
			if err != nil {
				f.give(1)
				if bg.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			f.push(&delivery{msg: bus.Message{Body: m.Value}, ack: func(ctx context.Context) error { return r.CommitMessages(ctx, m) }})
		}
	}()
	return f, nil
}

// Close closes the subscriptions and the writer.
func (b *KafkaGo) Close() error {
	return errors.Join(b.subs.closeAll(), b.w.Close())
}

// Franz is a Kafka connection through twmb/franz-go directly: a producer
// client with acks=all and a 1 ms linger (the kafka adapter's batch
// timeout; franz-go's default is 10 ms), and per subscription a group
// consumer ("<topic>.<group>") that marks acked records and lets the
// client commit the marks in the background, franz-go's at-least-once
// recipe. Like kafka-go's Reader it commits a partition's highest mark.
type Franz struct {
	t    *kafkaTarget
	prod *kgo.Client
	subs subs
}

// OpenFranz connects to rawURL (kafka://host:port[?partitions=N]).
func OpenFranz(ctx context.Context, rawURL string) (bus.Broker, error) {
	t, err := parseKafka(rawURL)
	if err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(t.addrs...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(time.Millisecond), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrBadConfig, err)
	}
	return &Franz{t: t, prod: prod}, nil
}

// Publish produces msgs and waits for every record's acks=all.
func (b *Franz) Publish(ctx context.Context, topic string, msgs ...*bus.Message) error {
	if err := b.t.topic(ctx, topic); err != nil {
		return err
	}
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: topic, Value: m.Body}
	}
	return b.prod.ProduceSync(ctx, recs...).FirstErr()
}

// Subscribe consumes the topic as a member of the group "<topic>.<group>".
func (b *Franz) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (bus.Subscription, error) {
	opts = driver.Defaults(topic, opts)
	if err := b.t.topic(ctx, topic); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.t.addrs...), kgo.ConsumerGroup(topic+"."+opts.Group),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(100*time.Millisecond), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", bus.ErrBadConfig, err)
	}
	bg, cancel := context.WithCancel(context.Background())
	f := newFeed(opts.Prefetch, func() error {
		cancel()
		ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		err := cl.CommitMarkedOffsets(ctx)
		cl.Close()
		return err
	})
	if err := b.subs.add(f); err != nil {
		cl.Close()
		return nil, err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		go func() { <-f.done; cancel() }()
		for {
			n := f.take(bg, opts.Prefetch)
			if n == 0 {
				return
			}
			fetches := cl.PollRecords(bg, n)
			if fetches.IsClientClosed() || bg.Err() != nil {
				return
			}
			got := 0
			fetches.EachRecord(func(r *kgo.Record) {
				got++
				f.push(&delivery{msg: bus.Message{Body: r.Value}, ack: func(context.Context) error {
					cl.MarkCommitRecords(r)
					return nil
				}})
			})
			f.give(n - got)
		}
	}()
	return f, nil
}

// Close closes the subscriptions and the producer.
func (b *Franz) Close() error {
	err := b.subs.closeAll()
	b.prod.Close()
	return err
}
