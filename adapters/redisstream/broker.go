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
	bus.Register(Scheme, open)
	bus.Register(SchemeTLS, open)
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
	rdb        *redis.Client
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
	rdb := redis.NewClient(opts.client(opts.PoolSize))
	c := &conn{opts: opts, rdb: rdb, subs: map[*subscription]struct{}{}}
	if err := c.probe(ctx); err != nil {
		rdb.Close()
		return nil, err
	}
	return &Broker{Broker: driver.New(c, driver.Options{Logger: opts.Logger, Name: "redisstream"}), c: c}, nil
}

// client returns the go-redis options of one client.
func (o Options) client(poolSize int) *redis.Options {
	// No command is sent twice behind the caller's back: a resent
	// pipeline would duplicate the XADDs that had succeeded. Callers, and
	// the subscription loop, retry what failed.
	return redisconn.Client(o.endpoint(), o.DialTimeout, o.ReadTimeout, poolSize)
}

func (o Options) endpoint() redisconn.Endpoint {
	return redisconn.Endpoint{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS}
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
			"redisstream: %s runs Redis %s; streams with XAUTOCLAIM need 6.2 or newer", b.opts.Addr, srv.Version)}}
	}
	if srv.Mode == "cluster" {
		// The scripts touch a topic's stream, its group's keys and the
		// dead-letter stream together, which Cluster refuses across hash
		// slots.
		return &bus.ConfigError{Problems: []error{fmt.Errorf(
			"redisstream: %s is a Redis Cluster node; this adapter needs a standalone server", b.opts.Addr)}}
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
func (b *Broker) Client() *redis.Client { return b.c.rdb }

// Send appends msgs to the stream named topic with one XADD each, all in
// one pipeline, and returns once Redis has replied to every XADD. When
// only some XADDs succeed, the error is a *bus.PublishError naming the
// others.
func (b *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	switch len(msgs) {
	case 1:
		if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: encode(msgs[0], 0)}).Err(); err != nil {
			return forbidden(fmt.Errorf("redisstream: publish to %q: %w", topic, err))
		}
		return nil
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(msgs))
	for i, m := range msgs {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: encode(m, 0)})
	}
	_, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	// go-redis stamps a broken connection's error on every command of the
	// pipeline, the answered ones too; an XADD was confirmed when its
	// reply, the new entry's ID, was read.
	var failed []int
	for i, c := range cmds {
		if c.Val() == "" {
			failed = append(failed, i)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if first := cmds[failed[0]].Err(); first != nil {
		err = first
	}
	if len(failed) == len(msgs) {
		return forbidden(fmt.Errorf("redisstream: publish %d messages to %q: %w", len(msgs), topic, err))
	}
	return &bus.PublishError{Unconfirmed: failed, Err: forbidden(fmt.Errorf("redisstream: publish to %q: %w", topic, err))}
}

var forbidden = redisconn.Forbidden

// Subscribe joins opts.Group on topic, creating the group when it does not
// exist. A new group starts at the beginning of the stream, so it receives
// every message still in the stream, including those published before it
// existed.
func (b *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	s := newSubscription(b, topic, opts)
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
func (b *conn) ensureGroups(ctx context.Context, topic, group string) error {
	pipe := b.rdb.Pipeline()
	main := pipe.XGroupCreateMkStream(ctx, topic, group, "0")
	retry := pipe.XGroupCreateMkStream(ctx, retryKey(topic, group), group, "0")
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

// Close closes the connections; the portable side has closed the
// subscriptions, which gave back what they held.
func (b *conn) Close(context.Context) error {
	return b.rdb.Close()
}

// retryKey and delayedKey name a group's retry stream and delayed set. The
// topic's length makes the names unambiguous whatever the topic and group
// contain.
func retryKey(topic, group string) string {
	return "omnibus:retry:" + strconv.Itoa(len(topic)) + ":" + topic + ":" + group
}

func delayedKey(topic, group string) string {
	return "omnibus:delayed:" + strconv.Itoa(len(topic)) + ":" + topic + ":" + group
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
