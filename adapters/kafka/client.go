package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// ErrNoTopic reports a topic that does not exist while Options.NoTopicCreation
// is set.
var ErrNoTopic = errors.New("kafka: topic does not exist")

// ErrRevoked is returned by Ack and Nack of a delivery whose partition was
// handed to another group member in a rebalance before the delivery was
// settled. The message is delivered again, to the partition's new owner.
var ErrRevoked = errors.New("kafka: partition revoked; the message will be redelivered")

// Client is a connection to a Kafka cluster. It implements bus.Broker on
// the driver layer (see package bus/driver): it publishes, and its
// subscriptions are members of Kafka consumer groups. It is safe for
// concurrent use.
type Client struct {
	*driver.Broker
	c *conn
}

// conn is the driver of a Client: one franz-go client produces every
// record (published messages, retries, dead letters) and makes the admin
// requests; each subscription has a franz-go client of its own, a member
// of its consumer group (a client joins one group).
type conn struct {
	opts Options
	prod *franz.Client
	adm  *kadm.Client

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	topics map[string]*topicState
}

// topicState records a topic known to exist, or the lookup under way.
type topicState struct {
	ready      chan struct{} // closed when the lookup ends
	partitions int
	err        error
	at         time.Time // when the lookup ended
}

// topicTTL is how long a topic's partition count is trusted before it is
// looked up again: partitions may be added to a topic at any time.
const topicTTL = 30 * time.Second

var (
	_ bus.Broker          = (*Client)(nil)
	_ bus.FeatureReporter = (*Client)(nil)
	_ driver.Driver       = (*conn)(nil)
)

// New validates opts, connects to the cluster and returns a Client. It
// fails with an error matching bus.ErrBadConfig for invalid options,
// bus.ErrUnreachable when no broker answers within ctx and
// Options.DialTimeout, and bus.ErrAuth when SASL is refused.
func New(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	c := &conn{opts: opts, subs: map[*subscription]struct{}{}, topics: map[string]*topicState{}}
	prod, err := franz.NewClient(c.producerOptions()...)
	if err != nil {
		return nil, &bus.ConfigError{Problems: []error{fmt.Errorf("producer: %w", err)}}
	}
	c.prod, c.adm = prod, kadm.NewClient(prod)
	dctx, dcancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer dcancel()
	if err := prod.Ping(dctx); err != nil {
		prod.Close()
		if ctx.Err() != nil {
			// The caller gave up first; say so as well.
			return nil, fmt.Errorf("%w: kafka %s: %w", bus.ErrUnreachable, strings.Join(opts.Brokers, ","), ctx.Err())
		}
		return nil, c.dialError(err)
	}
	return &Client{Broker: driver.New(c, driver.Options{Logger: opts.Logger, Name: "kafka"}), c: c}, nil
}

// producerOptions configure the franz-go client that writes every record:
// published messages, retries and dead letters.
//
// Idempotent writes stay on, as franz-go has them by default, unless
// Options.Acks is AcksLeader: the broker drops the duplicates of the
// producer's own retries, and a partition may have up to five produce
// requests in flight without reordering. Kafka 3.0
// and later allow it to any principal that may write to a topic; earlier
// versions ask for IDEMPOTENT_WRITE on the cluster.
func (c *conn) producerOptions() []franz.Opt {
	o := c.opts
	codec, _ := compression(o.Compression)
	acks := []franz.Opt{franz.RequiredAcks(franz.AllISRAcks())}
	if o.Acks == AcksLeader {
		acks = []franz.Opt{franz.RequiredAcks(franz.LeaderAck()), franz.DisableIdempotentWrite()}
	}
	return append(append(c.connOptions(), acks...),
		franz.ProducerLinger(o.BatchTimeout),
		franz.ProducerBatchMaxBytes(o.batchBytes()),
		franz.ProducerBatchCompression(codec),
		franz.ProduceRequestTimeout(o.WriteTimeout),
		// A record waits at most this long for its acknowledgement,
		// retries included, unless a request carrying it is in flight:
		// then the idempotent producer waits for the answer, so as not to
		// break its sequence. Publish itself returns when its context
		// ends.
		franz.RecordDeliveryTimeout(deliveryTimeouts*o.WriteTimeout),
		franz.RecordPartitioner(partitioner{}))
}

// connOptions are the franz-go options of every connection: brokers,
// client ID, TLS and SASL.
func (c *conn) connOptions() []franz.Opt {
	o := c.opts
	opts := []franz.Opt{
		franz.SeedBrokers(o.Brokers...),
		franz.ClientID(o.ClientID),
		franz.DialTimeout(o.DialTimeout),
		// A topic created a moment ago, or a partition whose leader moved,
		// is looked up again after this pause rather than franz-go's 5s.
		franz.MetadataMinAge(metadataMinAge),
		franz.MetadataMaxAge(o.MetadataMaxAge),
		franz.WithLogger(franzLogger{o.Logger}),
	}
	if o.TLS != nil {
		opts = append(opts, franz.DialTLSConfig(o.TLS))
	}
	if m, _ := o.SASL.mechanism(); m != nil {
		opts = append(opts, franz.SASL(m))
	}
	return opts
}

// metadataMinAge is the shortest pause between two metadata requests of a
// franz-go client.
const metadataMinAge = 250 * time.Millisecond

// deliveryTimeouts is how many WriteTimeouts a record may take to be
// acknowledged, retries included.
const deliveryTimeouts = 3

// dialError classifies a failure to reach the cluster. Its text names the
// broker addresses only: credentials never appear in it.
func (c *conn) dialError(err error) error {
	brokers := strings.Join(c.opts.Brokers, ",")
	if isAuthError(err) {
		return fmt.Errorf("%w: kafka %s: %v", bus.ErrAuth, brokers, err)
	}
	if isForbidden(err) {
		return fmt.Errorf("%w: kafka %s: %v", bus.ErrForbidden, brokers, err)
	}
	return fmt.Errorf("%w: kafka %s within %v: %v", bus.ErrUnreachable, brokers, c.opts.DialTimeout, err)
}

func isAuthError(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) ||
		errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState)
}

// isForbidden reports an operation that the cluster's ACLs do not allow
// the client's principal.
func isForbidden(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// classify marks err with bus.ErrAuth when SASL failed and with
// bus.ErrForbidden when an ACL refused the operation.
func classify(err error) error {
	switch {
	case err == nil || errors.Is(err, bus.ErrAuth) || errors.Is(err, bus.ErrForbidden):
		return err
	case isAuthError(err):
		return fmt.Errorf("%w: %w", bus.ErrAuth, err)
	case isForbidden(err):
		return fmt.Errorf("%w: %w", bus.ErrForbidden, err)
	}
	return err
}

// Features describes what the client guarantees:
//
//   - OrderedPerKey: a key always maps to the same partition (murmur2, as
//     the Java client), and a partition is delivered in order. A Nack sends
//     its message through the retry topic, behind later messages of its
//     key, unless Options.BlockingRetry is set.
//   - Persistent: Publish returns after every in-sync replica has the
//     messages (acks=all). How many replicas that is, and whether they
//     fsync, is the topic's and broker's configuration: with replication
//     factor 1 a message survives a broker restart but not the loss of
//     that broker's disk.
//   - NackDelay: delays are kept by the retry topics (or in place with
//     Options.BlockingRetry, which holds back the partition meanwhile).
//   - MaxMessageSize: Options.MaxMessageSize.
func (c *conn) Features() bus.Features {
	return bus.Features{
		OrderedPerKey:  true,
		Persistent:     true,
		NackDelay:      true,
		MaxMessageSize: c.opts.MaxMessageSize,
	}
}

// Send sends msgs to topic and returns once the partition leaders have
// them from every in-sync replica (acks=all). Messages of one call travel
// together, in one batch per partition, beside those of concurrent calls;
// a message's Key picks its partition. The topic is created on first use
// unless Options.NoTopicCreation is set. When some partitions fail, the
// error is a *bus.PublishError naming the unconfirmed messages; when ctx
// ends first, every message is unconfirmed, and those already on their
// way may still arrive. The producer is idempotent, so its own retries
// write nothing twice; a message published again after an error may be
// delivered twice, and consumers can use the message ID to notice.
func (c *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	if err := validTopic(topic); err != nil {
		return fmt.Errorf("%w: %v", bus.ErrInvalidMessage, err)
	}
	if _, err := c.ensureTopic(ctx, topic, 0); err != nil {
		return err
	}
	records := make([]*franz.Record, len(msgs))
	slab := make([]franz.Record, len(msgs))
	lane := rand.Int32()
	now := time.Now()
	for i, m := range msgs {
		r := &slab[i]
		encodeInto(r, topic, m, 0, time.Time{}, now)
		r.Partition = lane
		records[i] = r
	}
	return c.write(ctx, topic, records)
}

// partitioner puts a record with a key on the partition the Java client
// would (murmur2 of the key), and the keyless records of one Publish call
// together on one partition, as the Java client's sticky partitioner
// does: one batch instead of one per partition, and a keyless batch is
// consumed in the order it was given. Before a keyless record is
// produced, its Partition field holds its call's random lane, a
// non-negative number shared by the call's records; the producer then
// overwrites it with the partition chosen.
type partitioner struct{}

func (partitioner) ForTopic(string) franz.TopicPartitioner {
	return topicPartitioner{keyed: franz.StickyKeyPartitioner(nil).ForTopic("")}
}

type topicPartitioner struct {
	keyed franz.TopicPartitioner // murmur2, masked and modulo, as Kafka's
}

// Partition returns the partition, of a topic with partitions
// partitions, that Publish writes a message with a non-empty key to: murmur2 of the
// key, with the sign bit masked, modulo the partition count, as the Java
// client and kafka-go's Murmur2Balancer choose.
func Partition(key string, partitions int) int {
	return partitioner{}.ForTopic("").Partition(&franz.Record{Key: []byte(key)}, partitions)
}

// RequiresConsistency: a key keeps its partition even while that
// partition cannot be written; keyless records go to a writable one.
func (p topicPartitioner) RequiresConsistency(r *franz.Record) bool { return r.Key != nil }

func (p topicPartitioner) Partition(r *franz.Record, n int) int {
	if r.Key != nil {
		return p.keyed.Partition(r, n)
	}
	return int(uint32(r.Partition) % uint32(n))
}

// write produces records, all to topic, and waits for their
// acknowledgements or for ctx to end.
func (c *conn) write(ctx context.Context, topic string, records []*franz.Record) error {
	err := c.produce(ctx, topic, records)
	if pe, ok := err.(*bus.PublishError); ok {
		pe.Err = classify(pe.Err)
		return pe
	}
	return classify(err)
}

func (c *conn) produce(ctx context.Context, topic string, records []*franz.Record) error {
	// ProduceSync sends the partitions' batches as soon as the records are
	// buffered instead of letting them linger, since its caller waits. It
	// runs apart so that Publish can return when ctx ends: an idempotent
	// producer does not give up a record while a request carrying it is
	// in flight. The records do not carry ctx either: the producer fails
	// every buffered record of a partition when the first one's context
	// ends, and one caller's cancellation must not fail the records of
	// others sharing its batch. Their delivery timeout bounds them instead.
	done := make(chan franz.ProduceResults, 1)
	go func() { done <- c.prod.ProduceSync(context.WithoutCancel(ctx), records...) }()
	var results franz.ProduceResults
	select {
	case results = <-done:
	case <-ctx.Done():
		select {
		case results = <-done:
		default:
			// Requests may be in flight: nothing is known about them.
			all := make([]int, len(records))
			for i := range all {
				all[i] = i
			}
			return &bus.PublishError{Unconfirmed: all, Err: fmt.Errorf("kafka: produce to %q: %w", topic, ctx.Err())}
		}
	}
	var failed map[*franz.Record]error
	for _, r := range results {
		if r.Err != nil {
			if failed == nil {
				failed = map[*franz.Record]error{}
			}
			failed[r.Record] = r.Err
		}
	}
	if failed == nil {
		return nil
	}
	var idx []int
	var first error
	closed := 0
	for i, r := range records {
		err, ok := failed[r]
		if !ok {
			continue
		}
		idx = append(idx, i)
		if first == nil {
			first = err
		}
		if errors.Is(err, franz.ErrClientClosed) {
			closed++
		}
	}
	switch {
	case closed == len(records):
		return bus.ErrClosed
	case errors.Is(first, franz.ErrClientClosed):
		first = bus.ErrClosed
	}
	return &bus.PublishError{Unconfirmed: idx, Err: fmt.Errorf("kafka: produce to %q: %w", topic, first)}
}

// ensureTopic returns the partition count of topic, creating the topic with
// partitions partitions (0: Options.Partitions) when it is missing and
// creation is on. Concurrent calls for one topic share one lookup; a
// failed lookup is forgotten, so the next call tries again, and a count
// older than topicTTL is looked up again.
func (c *conn) ensureTopic(ctx context.Context, topic string, partitions int) (int, error) {
	c.mu.Lock()
	ts, ok := c.topics[topic]
	if ok {
		select {
		case <-ts.ready:
			// The lookup has ended, so its fields may be read.
			ok = ts.err != nil || time.Since(ts.at) <= topicTTL
		default:
		}
	}
	if !ok {
		ts = &topicState{ready: make(chan struct{})}
		c.topics[topic] = ts
		c.mu.Unlock()
		n, err := c.lookupTopic(ctx, topic, partitions)
		ts.partitions, ts.err, ts.at = n, classify(err), time.Now()
		if ts.err != nil {
			c.mu.Lock()
			if c.topics[topic] == ts {
				delete(c.topics, topic)
			}
			c.mu.Unlock()
		}
		close(ts.ready)
		return ts.partitions, ts.err
	}
	c.mu.Unlock()
	select {
	case <-ts.ready:
		if ts.err != nil {
			// Someone else's attempt failed, perhaps on their context.
			return c.ensureTopic(ctx, topic, partitions)
		}
		return ts.partitions, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// partitionsOf returns topic's partition count, 0 when it does not exist.
func (c *conn) partitionsOf(ctx context.Context, topic string) (int, error) {
	td, err := c.adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: metadata of %q: %w", topic, err)
	}
	d, ok := td[topic]
	switch {
	case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		return 0, nil
	case d.Err != nil:
		return 0, fmt.Errorf("kafka: metadata of %q: %w", topic, d.Err)
	}
	return len(d.Partitions), nil
}

// topicGrace are the pauses between the lookups of partitionsSoon: a
// topic created a moment ago reaches every broker's metadata a little
// later (about 1.5 s in all).
var topicGrace = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// partitionsSoon is partitionsOf asking again, during topicGrace, while
// the brokers do not know topic.
func (c *conn) partitionsSoon(ctx context.Context, topic string) (int, error) {
	n, err := c.partitionsOf(ctx, topic)
	for _, pause := range topicGrace {
		if err != nil || n > 0 {
			return n, err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		n, err = c.partitionsOf(ctx, topic)
	}
	return n, err
}

func (c *conn) lookupTopic(ctx context.Context, topic string, partitions int) (int, error) {
	if n, err := c.partitionsOf(ctx, topic); err != nil || n > 0 {
		return n, err
	}
	if c.opts.NoTopicCreation {
		if n, err := c.partitionsSoon(ctx, topic); err != nil || n > 0 {
			return n, err
		}
		return 0, fmt.Errorf("%w: %q (topic creation is off)", ErrNoTopic, topic)
	}
	if partitions <= 0 {
		partitions = c.opts.Partitions
	}
	var configs map[string]*string
	if c.opts.MinInsyncReplicas > 0 {
		v := strconv.Itoa(c.opts.MinInsyncReplicas)
		configs = map[string]*string{"min.insync.replicas": &v}
	}
	_, err := c.adm.CreateTopic(ctx, int32(partitions), int16(c.opts.ReplicationFactor), configs, topic)
	switch {
	case err == nil:
		return partitions, nil
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Created meanwhile elsewhere.
		return c.partitionsSoon(ctx, topic)
	}
	return 0, fmt.Errorf("kafka: create topic %q: %w", topic, err)
}

// growTopic adds partitions to topic, a retry topic, until it has at
// least n, so that a key keeps its partition index across the topic and
// its retries when partitions were added to the topic.
func (c *conn) growTopic(ctx context.Context, topic string, n int) error {
	have, err := c.partitionsOf(ctx, topic)
	if err != nil || have >= n || have == 0 {
		return err
	}
	if _, err := c.adm.UpdatePartitions(ctx, n, topic); err != nil {
		return fmt.Errorf("kafka: adding partitions to %q: %w", topic, err)
	}
	c.mu.Lock()
	delete(c.topics, topic)
	c.mu.Unlock()
	return nil
}

// Subscribe joins the consumer group of opts.Group on topic; see
// subscription for how it consumes. It creates the topic and the group's
// retry topic when they are missing (unless Options.NoTopicCreation is
// set), and waits until the member has joined the group and has its first
// partition assignment. If ctx ends first, the subscription is returned
// all the same and finishes joining in the background; either way it
// receives every message published after Subscribe returns, because a
// group new to a topic starts at the topic's earliest offset.
func (c *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	var problems []error
	if err := validTopic(topic); err != nil {
		problems = append(problems, err)
	}
	if !c.opts.BlockingRetry {
		if err := validTopic(RetryTopic(topic, opts.Group)); err != nil {
			problems = append(problems, fmt.Errorf("group %q makes an invalid retry topic: %w", opts.Group, err))
		}
	}
	if err := validTopic(opts.DeadLetterTopic); err != nil {
		problems = append(problems, fmt.Errorf("dead-letter topic: %w", err))
	}
	if len(problems) > 0 {
		return nil, &bus.ConfigError{Problems: problems}
	}
	s := newSubscription(c, topic, opts)
	if err := s.start(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	abandon := func(err error) (driver.Subscription, error) {
		cctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
		defer cancel()
		s.Close(cctx, nil, nil)
		return nil, err
	}
	select {
	case <-s.joined:
		return s, nil
	case err := <-s.fatal:
		return abandon(err)
	case <-ctx.Done():
		if err := s.joinError(ctx.Err()); err != nil {
			return abandon(err)
		}
		return s, nil
	}
}

func (c *conn) forget(s *subscription) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
}

// Close flushes what the producer still holds, within ctx and
// Options.WriteTimeout, and disconnects; the portable side has closed the
// subscriptions, whose unsettled deliveries went back to the group.
func (c *conn) Close(ctx context.Context) error {
	return c.shutdown(ctx)
}

func (c *conn) shutdown(ctx context.Context) error {
	var err error
	if c.prod != nil {
		// Records still unacknowledged after the flush fail with
		// bus.ErrClosed.
		fctx, cancel := context.WithTimeout(ctx, c.opts.WriteTimeout)
		err = c.prod.Flush(fctx)
		cancel()
		c.prod.Close()
		if err != nil {
			err = fmt.Errorf("kafka: flushing the producer at close: %w", err)
		}
	}
	return err
}

// validTopic applies Kafka's rules for topic names.
func validTopic(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 249 {
		return fmt.Errorf("topic name %q: want 1 to 249 characters, other than \".\" and \"..\" (%d given)", name, len(name))
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("topic name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}
