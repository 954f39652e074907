package redisstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

func init() {
	for _, s := range []string{Scheme, SchemeTLS, SchemeCluster, SchemeClusterTLS, SchemeSentinel, SchemeSentinelTLS} {
		bus.Register(s, open)
	}
}

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	b, err := New(ctx, opts)
	if err != nil {
		// Not a typed nil in the interface.
		return nil, err
	}
	return b, nil
}

// ErrReclaimed is returned by Nack when the delivery had been idle past the
// visibility timeout and another consumer had claimed it, so the Nack was
// not applied; that consumer settles the message instead.
var ErrReclaimed = errors.New("redisstream: delivery was claimed by another consumer")

// Broker is a connection to a Redis server, publishing to and consuming
// from Redis streams. It implements bus.Broker on the driver layer (see
// package bus/driver); see the package documentation for the layout of
// what it stores.
type Broker struct {
	*driver.Broker
	c *conn
}

// conn is the driver of a Broker.
type conn struct {
	opts       Options
	rdb        redis.UniversalClient
	persistent bool

	mu   sync.Mutex
	subs map[*subscription]struct{}
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ driver.Driver       = (*conn)(nil)
)

// New validates opts and connects to Redis. ctx and Options.DialTimeout
// bound the connection: an unreachable server fails with an error matching
// bus.ErrUnreachable, refused credentials with bus.ErrAuth.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	rdb := opts.newClient(opts.PoolSize, 0)
	c := &conn{opts: opts, rdb: rdb, subs: map[*subscription]struct{}{}}
	if err := c.probe(ctx); err != nil {
		rdb.Close()
		return nil, err
	}
	return &Broker{Broker: driver.New(c, driver.Options{Logger: opts.Logger, Name: "redisstream"}), c: c}, nil
}

// newClient returns one client of the server, cluster or master (see
// redisconn.NewClient).
func (o Options) newClient(poolSize, pipelinePool int) redis.UniversalClient {
	// No command is sent twice behind the caller's back (except by a
	// cluster client, see redisconn.NewClient): a resent pipeline would
	// duplicate the XADDs that had succeeded. Callers, and the
	// subscription loop, retry what failed.
	return redisconn.NewClient(o.endpoint(), o.DialTimeout, o.ReadTimeout, poolSize, pipelinePool)
}

func (o Options) endpoint() redisconn.Endpoint {
	e := redisconn.Endpoint{Addr: o.Addr, Addrs: o.Addrs, MasterName: o.MasterName, SentinelPassword: o.SentinelPassword,
		Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS}
	switch {
	case o.Cluster:
		e.Mode = redisconn.Cluster
	case o.MasterName != "":
		e.Mode = redisconn.Sentinel
	}
	return e
}

// probe checks that the server answers and accepts the credentials, and
// reads its persistence settings.
func (b *conn) probe(ctx context.Context) error {
	srv, err := redisconn.Probe(ctx, b.rdb, b.opts.endpoint(), b.opts.DialTimeout, "redisstream")
	if err != nil {
		return err
	}
	if !srv.AtLeast(6, 2) {
		return &bus.ConfigError{Problems: []error{fmt.Errorf(
			"redisstream: %s runs Redis %s; streams with XAUTOCLAIM need 6.2 or newer", b.opts.endpoint().Where(), srv.Version)}}
	}
	if srv.Mode == "cluster" && !b.opts.Cluster {
		return &bus.ConfigError{Problems: []error{fmt.Errorf(
			"redisstream: %s is a Redis Cluster node; connect with %s:// (Options.Cluster)", b.opts.endpoint().Where(), SchemeCluster)}}
	}
	if b.opts.WaitReplicas > 0 && srv.Replicas >= 0 && srv.Replicas < b.opts.WaitReplicas {
		b.opts.Logger.Warn("redisstream: fewer replicas connected than Publish waits for; Publish fails with ErrNotReplicated until they are",
			"replicas", srv.Replicas, "wait", b.opts.WaitReplicas)
	}
	b.persistent = srv.Persistent
	return nil
}

func (b *conn) dialError(err error) error {
	return redisconn.DialError(err, b.opts.endpoint(), "redisstream")
}

// Features describes the guarantees of this Broker. Persistent is true when
// the server runs with appendonly yes and appendfsync always or everysec,
// as read at New: accepted messages then survive a restart of Redis, and
// with everysec a crash of the machine can lose about the last second of
// them. Ordering holds for one consumer with prefetch 1, which reads the
// stream in order.
func (b *conn) Features() bus.Features {
	return bus.Features{
		OrderedPerKey:  true,
		Persistent:     b.persistent,
		NackDelay:      true,
		MaxMessageSize: b.opts.MaxMessageSize,
	}
}

// Client returns the Broker's go-redis client, for other work on the same
// server. It belongs to the Broker, which closes it.
// It is a *redis.ClusterClient for a cluster and a *redis.Client otherwise.
func (b *Broker) Client() redis.UniversalClient { return b.c.rdb }

// ErrNotReplicated is returned by Publish with Options.WaitReplicas when
// fewer replicas than asked acknowledged the messages within
// Options.WaitTimeout. The master has them, and consumers may receive
// them; what is not known is whether they survive the master's loss.
var ErrNotReplicated = errors.New("redisstream: fewer replicas than Options.WaitReplicas acknowledged the write")

// Send appends msgs to the stream named topic with one XADD each, all in
// one pipeline, and returns once Redis has replied to every XADD (and,
// with Options.WaitReplicas, to the WAIT after them). When only some
// XADDs succeed, the error is a *bus.PublishError naming the others.
func (b *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	wait := b.opts.WaitReplicas
	if len(msgs) == 1 && wait == 0 {
		if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: encode(msgs[0], 0)}).Err(); err != nil {
			return forbidden(fmt.Errorf("redisstream: publish to %q: %w", topic, err))
		}
		return nil
	}
	var pipe redis.Pipeliner
	if cc, ok := b.rdb.(*redis.ClusterClient); ok && wait > 0 {
		// WAIT counts the replicas of the writes made on its own
		// connection, so it goes to the stream's master in one pipeline
		// with them.
		master, err := cc.MasterForKey(ctx, topic)
		if err != nil {
			return fmt.Errorf("redisstream: publish to %q: %w", topic, err)
		}
		pipe = master.Pipeline()
	} else {
		pipe = b.rdb.Pipeline()
	}
	cmds := make([]*redis.StringCmd, len(msgs))
	for i, m := range msgs {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: encode(m, 0)})
	}
	var acked *redis.Cmd
	if wait > 0 {
		acked = pipe.Do(ctx, "WAIT", wait, b.opts.WaitTimeout.Milliseconds())
	}
	_, err := pipe.Exec(ctx)
	if err == nil && acked != nil {
		if n, _ := acked.Int64(); n < int64(wait) {
			err = fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, wait, b.opts.WaitTimeout)
			return b.unconfirmed(topic, len(msgs), allIndexes(len(msgs)), err)
		}
	}
	if err == nil {
		return nil
	}
	if isMoved(err) {
		if cc, ok := b.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(ctx)
		}
	}
	// go-redis stamps a broken connection's error on every command of the
	// pipeline, the answered ones too; an XADD was confirmed when its
	// reply, the new entry's ID, was read, and all of them only when the
	// WAIT after them was answered.
	var failed []int
	for i, c := range cmds {
		if c.Val() == "" || acked != nil {
			failed = append(failed, i)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if first := cmds[failed[0]].Err(); first != nil {
		err = first
	}
	return b.unconfirmed(topic, len(msgs), failed, err)
}

// unconfirmed is the error of a Send of n messages to topic whose messages
// at the indexes failed did not go through.
func (b *conn) unconfirmed(topic string, n int, failed []int, err error) error {
	if len(failed) == n {
		if n == 1 {
			return forbidden(fmt.Errorf("redisstream: publish to %q: %w", topic, err))
		}
		return forbidden(fmt.Errorf("redisstream: publish %d messages to %q: %w", n, topic, err))
	}
	return &bus.PublishError{Unconfirmed: failed, Err: forbidden(fmt.Errorf("redisstream: publish to %q: %w", topic, err))}
}

func allIndexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// isMoved reports a cluster's MOVED or ASK redirect: the slot lives on
// another node now.
func isMoved(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && (strings.HasPrefix(re.Error(), "MOVED ") || strings.HasPrefix(re.Error(), "ASK "))
}

var forbidden = redisconn.Forbidden

// Subscribe joins opts.Group on topic, creating the group when it does not
// exist. A new group starts at the beginning of the stream, so it receives
// every message still in the stream, including those published before it
// existed.
func (b *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	s, err := newSubscription(b, topic, opts)
	if err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

func (b *conn) forget(s *subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// ensureGroups creates the group on the topic's stream and on the group's
// retry stream, reading from the start ("0") so that nothing published
// before the group existed is missed.
func (b *conn) ensureGroups(ctx context.Context, topic, rkey, group string) error {
	pipe := b.rdb.Pipeline()
	main := pipe.XGroupCreateMkStream(ctx, topic, group, "0")
	retry := pipe.XGroupCreateMkStream(ctx, rkey, group, "0")
	pipe.Exec(ctx)
	for _, c := range []*redis.StatusCmd{main, retry} {
		if err := c.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return forbidden(fmt.Errorf("redisstream: creating group %q on %q: %w", group, topic, err))
		}
	}
	return nil
}

// Trim deletes the entries of topic's stream that every consumer group of
// the stream has acknowledged, and returns how many it deleted. A stream
// without groups is left whole. Options.TrimInterval runs it periodically.
func (b *Broker) Trim(ctx context.Context, topic string) (int64, error) {
	if topic == "" {
		return 0, fmt.Errorf("%w: empty topic name", bus.ErrInvalidMessage)
	}
	n, err := b.c.trim(ctx, topic)
	if errors.Is(err, redis.ErrClosed) {
		return 0, bus.ErrClosed
	}
	return n, err
}

func (b *conn) trim(ctx context.Context, topic string) (int64, error) {
	n, err := trimScript.Run(ctx, b.rdb, []string{topic}).Int64()
	if err != nil {
		return 0, fmt.Errorf("redisstream: trim %q: %w", topic, err)
	}
	return n, nil
}

// Remove deletes what this package stores for topic: its stream (with its
// consumer groups), its dead-letter stream (bus.DeadLetterTopic(topic)),
// and for each of groups the group's retry stream and delayed set. Keys
// that do not exist are skipped.
func (b *Broker) Remove(ctx context.Context, topic string, groups ...string) error {
	if topic == "" {
		return fmt.Errorf("%w: empty topic name", bus.ErrInvalidMessage)
	}
	keys := []string{topic, bus.DeadLetterTopic(topic)}
	for _, g := range groups {
		r, err := b.c.retryKey(topic, g)
		if err != nil {
			return err
		}
		d, _ := b.c.delayedKey(topic, g)
		keys = append(keys, r, d)
	}
	// One DEL per key: on a cluster they may live in several slots.
	pipe := b.c.rdb.Pipeline()
	for _, k := range keys {
		pipe.Del(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if errors.Is(err, redis.ErrClosed) {
			return bus.ErrClosed
		}
		return forbidden(fmt.Errorf("redisstream: remove %q: %w", topic, err))
	}
	return nil
}

// Close closes the connections; the portable side has closed the
// subscriptions, which gave back what they held.
func (b *conn) Close(context.Context) error {
	return b.rdb.Close()
}

// retryKey and delayedKey name a group's retry stream and delayed set. The
// topic's length makes the names unambiguous whatever the topic and group
// contain. On a cluster they carry the topic's hash tag, so that they
// live in the topic stream's slot: omnibus:retry:{<tag>}:<len>:<topic>:<group>.
func (b *conn) retryKey(topic, group string) (string, error) {
	return b.groupKey("omnibus:retry:", topic, group)
}

func (b *conn) delayedKey(topic, group string) (string, error) {
	return b.groupKey("omnibus:delayed:", topic, group)
}

func (b *conn) groupKey(prefix, topic, group string) (string, error) {
	rest := strconv.Itoa(len(topic)) + ":" + topic + ":" + group
	if !b.opts.Cluster {
		return prefix + rest, nil
	}
	k, ok := redisconn.Tagged(prefix, topic, ":"+rest)
	if !ok {
		return "", fmt.Errorf("%w: topic %q: on a Redis Cluster the part of a topic name Redis hashes may not hold a \"}\" (name it with a hash tag such as {orders})",
			bus.ErrInvalidMessage, topic)
	}
	return k, nil
}

// parkingConsumer holds the entries that closed subscriptions gave back,
// until a live consumer of the group claims them.
const parkingConsumer = "omnibus-given-back"

// consumerName returns a name unique to one subscription.
func consumerName() string {
	host, _ := os.Hostname()
	var r [6]byte
	rand.Read(r[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
}
