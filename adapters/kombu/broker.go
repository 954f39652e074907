package kombu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

func init() {
	bus.Register(Scheme, open)
	bus.Register(SchemeTLS, open)
	bus.Register(SchemeSentinel, open)
}

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	b, err := New(ctx, opts)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ErrRestored is returned by Ack and Nack when the delivery was no longer
// in the unacked hash: it had stayed unrenewed past the visibility
// timeout and a restore (of this process, another omnibus process or a
// Celery worker) put it back in its queue, so it will be delivered again.
var ErrRestored = errors.New("kombu: delivery was restored to its queue after the visibility timeout")

// sep is kombu's separator in priority queue names and binding entries.
const sep = "\x06\x16"

// Names of kombu's keys, before KeyPrefix.
const (
	unackedKey      = "unacked"
	unackedIndexKey = "unacked_index"
	unackedMutexKey = "unacked_mutex"
	bindingPrefix   = "_kombu.binding."
	// delayedPrefix names, with the queue, the sorted set of delayed
	// redeliveries, a key of omnibus's own.
	delayedPrefix = "_omnibus.delayed."
	// mutexExpire is kombu's unacked_mutex_expire.
	mutexExpire = 5 * time.Minute
)

// Broker is a connection to a Redis server used as kombu's Redis
// transport uses it. It implements bus.Broker on the driver layer (see
// package bus/driver); see the package documentation for the layout and
// semantics.
type Broker struct {
	*driver.Broker
	c *conn
}

// conn is the driver of a Broker.
type conn struct {
	opts       Options
	rdb        *redis.Client
	persistent bool

	mu        sync.Mutex
	subs      map[*subscription]struct{}
	restoring bool
	stop      chan struct{}
	stopped   chan struct{}
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ driver.Driver       = (*conn)(nil)
)

// New validates opts and connects to Redis. An unreachable server fails
// with an error matching bus.ErrUnreachable, refused credentials with
// bus.ErrAuth.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	rdb := opts.newClient(opts.PoolSize, 0)
	c := &conn{opts: opts, rdb: rdb, subs: map[*subscription]struct{}{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	if err := c.probe(ctx); err != nil {
		rdb.Close()
		return nil, err
	}
	return &Broker{Broker: driver.New(c, driver.Options{Logger: opts.Logger, Name: "kombu"}), c: c}, nil
}

// newClient returns a client of the server, or of the master behind
// Sentinel, whose replies may take slower longer than ReadTimeout.
func (o Options) newClient(poolSize int, slower time.Duration) *redis.Client {
	// Nothing is sent twice behind the caller's back: a resent LPUSH
	// would enqueue a message twice, a resent take would hide messages
	// in the unacked hash until the visibility timeout. Standalone and
	// Sentinel clients are both a *redis.Client.
	return redisconn.NewClient(o.endpoint(), o.DialTimeout, o.ReadTimeout+slower, poolSize, 0).(*redis.Client)
}

func (o Options) endpoint() redisconn.Endpoint {
	e := redisconn.Endpoint{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS}
	if o.MasterName != "" {
		e.Mode, e.MasterName, e.Addrs, e.SentinelPassword = redisconn.Sentinel, o.MasterName, o.SentinelAddrs, o.SentinelPassword
	}
	return e
}

func (b *conn) probe(ctx context.Context) error {
	srv, err := redisconn.Probe(ctx, b.rdb, b.opts.endpoint(), b.opts.DialTimeout, "kombu")
	if err != nil {
		return err
	}
	if !srv.AtLeast(6, 2) {
		return &bus.ConfigError{Problems: []error{fmt.Errorf("kombu: %s runs Redis %s; BLMOVE needs 6.2 or newer", b.opts.Addr, srv.Version)}}
	}
	b.persistent = srv.Persistent
	return nil
}

// Features: a queue is one Redis list read in order, so a single consumer
// with prefetch 1 sees publish order; Nack delays are kept in a sorted set.
// Persistent follows the server's appendonly setting, read at New.
func (b *conn) Features() bus.Features {
	return bus.Features{
		OrderedPerKey:  true,
		Persistent:     b.persistent,
		NackDelay:      true,
		MaxMessageSize: b.opts.MaxMessageSize,
	}
}

// Client returns the Broker's go-redis client. It belongs to the Broker.
func (b *Broker) Client() *redis.Client { return b.c.rdb }

func (b *conn) key(name string) string { return b.opts.KeyPrefix + name }

// queueKey is the list of queue for priority step pri, as kombu names it.
func (b *conn) queueKey(queue string, pri int) string {
	if pri == 0 {
		return b.opts.KeyPrefix + queue
	}
	return b.opts.KeyPrefix + queue + sep + strconv.Itoa(pri)
}

// Send pushes msgs onto the list of the queue named topic with one
// LPUSH, as kombu's producers do, and returns once Redis has replied.
// Every message has priority 0.
func (b *conn) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	vals := make([]any, len(msgs))
	for i, m := range msgs {
		raw, err := encode(m, topic, 1)
		if err != nil {
			return err
		}
		vals[i] = raw
	}
	if err := b.rdb.LPush(ctx, b.queueKey(topic, 0), vals...).Err(); err != nil {
		return fmt.Errorf("kombu: publish %d message(s) to %q: %w", len(msgs), topic, err)
	}
	return nil
}

// Subscribe consumes the queue named topic. Every subscription of a queue
// competes for its messages, whatever opts.Group says: a kombu queue is
// one list.
func (b *conn) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	s := newSubscription(b, topic, opts)
	b.mu.Lock()
	b.subs[s] = struct{}{}
	if !b.restoring {
		b.restoring = true
		go b.restoreLoop()
	}
	b.mu.Unlock()
	return s, nil
}

func (b *conn) forget(s *subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// Close stops the restores and closes the connections; the portable side
// has closed the subscriptions, which put back what they held.
func (b *conn) Close(context.Context) error {
	b.mu.Lock()
	restoring := b.restoring
	b.mu.Unlock()
	close(b.stop)
	if restoring {
		<-b.stopped
	}
	return b.rdb.Close()
}

// restoreLoop runs Restore every RestoreInterval until Close.
func (b *conn) restoreLoop() {
	defer close(b.stopped)
	t := time.NewTicker(b.opts.RestoreInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.DialTimeout+4*b.opts.ReadTimeout)
		if _, err := b.restore(ctx); err != nil {
			b.opts.Logger.Warn("kombu: restoring unacknowledged messages failed; retrying", "error", err)
		}
		cancel()
	}
}

// restoreBatch is how many deliveries one Restore puts back at most, like
// kombu's unacked_restore_limit.
const restoreBatch = 100

// Restore puts back in their queues up to 100 deliveries that stayed in
// kombu's unacked hash, unrenewed, longer than the visibility timeout, as
// kombu's restore_visible does, and returns how many it restored. It
// holds kombu's unacked_mutex meanwhile, and does nothing when another
// process (a Celery worker, say) holds it. A restored message goes to
// the right end of its list, to be taken next, marked redelivered and with
// its attempt count raised. Subscriptions call it every RestoreInterval.
func (b *Broker) Restore(ctx context.Context) (int, error) { return b.c.restore(ctx) }

func (b *conn) restore(ctx context.Context) (int, error) {
	token := randomToken()
	ok, err := b.rdb.SetNX(ctx, b.key(unackedMutexKey), token, mutexExpire).Result()
	if err != nil {
		return 0, fmt.Errorf("kombu: taking %s: %w", b.key(unackedMutexKey), err)
	}
	if !ok {
		return 0, nil
	}
	defer func() {
		// Like a redis-py Lock: released only while still ours.
		unlockScript.Run(context.WithoutCancel(ctx), b.rdb, []string{b.key(unackedMutexKey)}, token)
	}()
	ceil := float64(time.Now().Add(-b.opts.VisibilityTimeout).UnixMicro()) / 1e6
	tags, err := b.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: b.key(unackedIndexKey), Start: "-inf", Stop: strconv.FormatFloat(ceil, 'f', 6, 64),
		ByScore: true, Count: restoreBatch,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("kombu: reading %s: %w", b.key(unackedIndexKey), err)
	}
	n := 0
	for _, tag := range tags {
		restored, err := b.restoreTag(ctx, tag, false)
		if err != nil {
			return n, err
		}
		if restored {
			n++
		}
	}
	return n, nil
}

// restoreTag moves the unacked entry of tag back to its queue in one
// transaction watched like kombu's restore_by_tag: at the right end of
// the list (to be taken next), or at the left end when back is true.
func (b *conn) restoreTag(ctx context.Context, tag string, back bool) (bool, error) {
	restored := false
	err := b.rdb.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.HGet(ctx, b.key(unackedKey), tag).Bytes()
		if errors.Is(err, redis.Nil) {
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, b.key(unackedIndexKey), tag)
				return nil
			})
			return err
		}
		if err != nil {
			return err
		}
		keys, payload := b.restoreTarget(ctx, raw)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, b.key(unackedKey), tag)
			p.ZRem(ctx, b.key(unackedIndexKey), tag)
			for _, k := range keys {
				if back {
					p.LPush(ctx, k, payload)
				} else {
					p.RPush(ctx, k, payload)
				}
			}
			return nil
		})
		if err == nil {
			restored = len(keys) > 0
		}
		return err
	}, b.key(unackedKey))
	if errors.Is(err, redis.TxFailedErr) {
		// Someone else settled or restored it meanwhile.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kombu: restoring delivery %s: %w", tag, err)
	}
	return restored, nil
}

// restoreTarget reads an unacked entry [message, exchange, routing_key]
// and returns the lists to push the message to and the message, marked
// for redelivery. The anonymous exchange routes to the queue named by the
// routing key; another exchange to the queues its kombu binding table
// binds with that routing key (direct exchanges, which Celery uses), or
// to the queue named by the routing key when none is bound.
func (b *conn) restoreTarget(ctx context.Context, entry []byte) ([]string, []byte) {
	var parts []json.RawMessage
	if err := json.Unmarshal(entry, &parts); err != nil || len(parts) != 3 {
		b.opts.Logger.Error("kombu: dropping an unacked entry that is not [message, exchange, routing_key]", "entry", truncate(entry))
		return nil, nil
	}
	var ex, rk string
	json.Unmarshal(parts[1], &ex)
	json.Unmarshal(parts[2], &rk)
	payload := []byte(parts[0])
	pri := 0
	var str string
	if json.Unmarshal(parts[0], &str) == nil {
		// A queue entry that was not an envelope, kept as a string.
		payload = []byte(str)
	} else if r, err := decode(payload); err == nil {
		pri = priorityStep(r.priority)
		if p, err := redelivery(payload, r.msg.Attempt+1); err == nil {
			payload = p
		}
	}
	queues := []string{rk}
	if ex != "" {
		if members, err := b.rdb.SMembers(ctx, b.key(bindingPrefix+ex)).Result(); err == nil {
			var bound []string
			for _, m := range members {
				f := strings.Split(m, sep)
				if len(f) == 3 && f[0] == rk {
					bound = append(bound, f[2])
				}
			}
			if len(bound) > 0 {
				queues = bound
			}
		}
	}
	keys := make([]string, 0, len(queues))
	for _, q := range queues {
		if q != "" {
			keys = append(keys, b.queueKey(q, pri))
		}
	}
	return keys, payload
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func randomToken() string {
	var r [16]byte
	rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)
