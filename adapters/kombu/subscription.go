package kombu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// takeScript moves the due delayed redeliveries of a queue into its lists,
// then pops up to ARGV[2] messages from the queue's lists in kombu's
// priority order and records each, in the same atomic step, in the
// unacked hash (delivery tag -> [message, exchange, routing_key], as kombu
// writes it) and the unacked index (delivery tag -> time). It returns the
// time of the next delayed redelivery (ms, or -1), then tag and message
// pairs. An entry that is not an envelope is recorded under a tag made
// from its hash, as a JSON string.
//
// KEYS: unacked, unacked_index, delayed set, the lists of priority steps
// 0, 3, 6, 9. ARGV: now in seconds, most to take, now in ms, queue name.
var takeScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3], 'LIMIT', 0, 100)
for _, m in ipairs(due) do
	redis.call('ZREM', KEYS[3], m)
	local bar = string.find(m, '|', 1, true)
	local step = tonumber(string.sub(m, 1, bar - 1))
	redis.call('RPUSH', KEYS[4 + math.floor(step / 3)], string.sub(m, bar + 1))
end
local n = tonumber(ARGV[2])
local out = {}
local taken = 0
for i = 4, 7 do
	while taken < n do
		local m = redis.call('RPOP', KEYS[i])
		if not m then break end
		local tag, ex, rk = nil, '', ARGV[4]
		local ok, env = pcall(cjson.decode, m)
		if ok and type(env) == 'table' and type(env.properties) == 'table' then
			local p = env.properties
			if type(p.delivery_tag) == 'string' and p.delivery_tag ~= '' then tag = p.delivery_tag end
			local di = p.delivery_info
			if type(di) == 'table' then
				if type(di.exchange) == 'string' then ex = di.exchange end
				if type(di.routing_key) == 'string' then rk = di.routing_key end
			end
		end
		local stored = m
		if not tag then
			tag = 'omnibus-malformed-' .. redis.sha1hex(m)
			stored = cjson.encode(m)
		end
		redis.call('HSET', KEYS[1], tag, '[' .. stored .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
		redis.call('ZADD', KEYS[2], ARGV[1], tag)
		taken = taken + 1
		out[#out + 1] = tag
		out[#out + 1] = m
	end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
table.insert(out, 1, nxt[2] or '-1')
return out
`)

// settleScript removes a delivery from the unacked hash and index and,
// for a Nack, stores its next form: ARGV[2] is "ack", "lpush" or "rpush"
// (onto the list KEYS[3]) or "zadd" (into the delayed set KEYS[3], score
// ARGV[4]). It returns 0, doing nothing else, when the delivery was no
// longer unacked.
//
// KEYS: unacked, unacked_index, target. ARGV: tag, mode, payload, score.
var settleScript = redis.NewScript(`
local gone = redis.call('HDEL', KEYS[1], ARGV[1]) == 0
redis.call('ZREM', KEYS[2], ARGV[1])
if gone then return 0 end
local mode = ARGV[2]
if mode == 'lpush' then
	redis.call('LPUSH', KEYS[3], ARGV[3])
elseif mode == 'rpush' then
	redis.call('RPUSH', KEYS[3], ARGV[3])
elseif mode == 'zadd' then
	redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return 1
`)

// subscription consumes one queue: the driver side of a bus.Subscription.
// Receive takes messages with takeScript and waits for the queue when it
// is empty; a goroutine of its own (keep) renews what it holds.
type subscription struct {
	b      *conn
	topic  string
	log    *slog.Logger
	wait   *redis.Client // for the blocking wait alone
	lists  [4]string
	take   []string // the keys of takeScript
	ctx    context.Context
	cancel context.CancelFunc

	keepDone chan struct{}

	mu   sync.Mutex
	held map[string]*delivery
}

func newSubscription(b *conn, topic string, opts bus.SubscribeOptions) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	// The wait's reply comes after up to PollInterval.
	s := &subscription{
		b: b, topic: topic, log: b.opts.Logger,
		wait:     b.opts.newClient(1, b.opts.PollInterval),
		ctx:      ctx,
		cancel:   cancel,
		keepDone: make(chan struct{}),
		held:     map[string]*delivery{},
	}
	for i, step := range []int{0, 3, 6, 9} {
		s.lists[i] = b.queueKey(topic, step)
	}
	s.take = append([]string{b.key(unackedKey), b.key(unackedIndexKey), b.key(delayedPrefix + topic)}, s.lists[:]...)
	go s.keep()
	return s
}

// keep renews what the subscription holds every third of the visibility
// timeout, until Close.
func (s *subscription) keep() {
	defer close(s.keepDone)
	renew := time.NewTicker(s.b.opts.VisibilityTimeout / 3)
	defer renew.Stop()
	for {
		select {
		case <-renew.C:
			s.renew()
		case <-s.ctx.Done():
			return
		}
	}
}

// Receive takes up to max messages, waiting for the queue while it is
// empty.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	for {
		got, next, err := s.takeSome(ctx, max)
		if err != nil || len(got) > 0 {
			return got, err
		}
		s.idle(ctx, next)
	}
}

// takeSome runs takeScript for up to n messages. The script is never
// cut short by Close, so that what it took is known and given back.
func (s *subscription) takeSome(ctx context.Context, n int) ([]driver.Delivery, time.Time, error) {
	if err := ctx.Err(); err != nil {
		return nil, time.Time{}, err
	}
	tctx, cancel := context.WithTimeout(context.Background(), s.b.opts.ReadTimeout)
	defer cancel()
	now := time.Now()
	res, err := takeScript.Run(tctx, s.b.rdb, s.take,
		strconv.FormatFloat(float64(now.UnixMicro())/1e6, 'f', 6, 64), n, now.UnixMilli(), s.topic).StringSlice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("kombu: taking from %q: %w", s.topic, err)
	}
	var next time.Time
	if ms, err := strconv.ParseFloat(res[0], 64); err == nil && ms >= 0 {
		next = time.UnixMilli(int64(ms))
	}
	got := make([]driver.Delivery, 0, (len(res)-1)/2)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 1; i+1 < len(res); i += 2 {
		d := &delivery{s: s, tag: res[i], raw: []byte(res[i+1])}
		r, err := decode(d.raw)
		if err != nil {
			d.bad = err
			d.msg = &bus.Message{ID: d.tag, Body: d.raw, Headers: bus.Headers{}, Attempt: 1}
		} else {
			d.msg, d.priority = r.msg, priorityStep(r.priority)
		}
		s.held[d.tag] = d
		got = append(got, d)
	}
	return got, next, nil
}

// idle waits until the queue's priority 0 list has a message, the next
// delayed redelivery is due, the poll interval has passed, or ctx ends.
// It waits with BLMOVE from the list's tail to its tail, which leaves the
// list as it was: it takes nothing, so a crash cannot lose a message.
func (s *subscription) idle(ctx context.Context, next time.Time) {
	wait := min(s.b.opts.PollInterval, s.b.opts.VisibilityTimeout/3)
	if !next.IsZero() {
		wait = min(wait, time.Until(next))
	}
	wait = max(wait, 10*time.Millisecond)
	// Closing the connection ends a blocked BLMOVE at once.
	stop := context.AfterFunc(ctx, func() { s.wait.Close() })
	defer stop()
	// go-redis's BLMove rounds timeouts up to whole seconds.
	err := s.wait.Do(ctx, "BLMOVE", s.lists[0], s.lists[0], "RIGHT", "RIGHT",
		strconv.FormatFloat(wait.Seconds(), 'f', 3, 64)).Err()
	if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
		s.log.Warn("kombu: waiting for messages failed", "queue", s.topic, "error", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// renew moves the time of every delivery held to now in the unacked
// index, so that no restore takes them from a live subscription.
func (s *subscription) renew() {
	s.mu.Lock()
	tags := make([]string, 0, len(s.held))
	for t := range s.held {
		tags = append(tags, t)
	}
	s.mu.Unlock()
	if len(tags) == 0 {
		return
	}
	score := float64(time.Now().UnixMicro()) / 1e6
	members := make([]redis.Z, len(tags))
	for i, t := range tags {
		members[i] = redis.Z{Score: score, Member: t}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.b.opts.ReadTimeout)
	defer cancel()
	if err := s.b.rdb.ZAddXX(ctx, s.b.key(unackedIndexKey), members...).Err(); err != nil && s.ctx.Err() == nil {
		s.log.Warn("kombu: renewing deliveries failed", "queue", s.topic, "error", err)
	}
}

// Close stops renewing and puts every delivery still held back at the
// right end of its queue, to be taken next, as kombu does at shutdown.
func (s *subscription) Close(ctx context.Context, _, _ []driver.Delivery) error {
	s.cancel()
	s.wait.Close()
	<-s.keepDone
	s.mu.Lock()
	held := s.held
	s.held = map[string]*delivery{}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.b.opts.DialTimeout+s.b.opts.ReadTimeout)
	defer cancel()
	var errs []error
	for _, d := range held {
		if _, err := s.b.restoreTag(ctx, d.tag, false); err != nil {
			errs = append(errs, err)
		}
	}
	s.b.forget(s)
	if len(errs) > 0 {
		return fmt.Errorf("kombu: giving back the deliveries of %q (a restore returns them after the visibility timeout): %w",
			s.topic, errors.Join(errs...))
	}
	return nil
}

type delivery struct {
	s        *subscription
	tag      string
	raw      []byte
	msg      *bus.Message
	priority int
	bad      error
}

func (d *delivery) Message() *bus.Message { return d.msg }

// Malformed reports an entry that is not a kombu envelope, with
// ErrMalformed: it goes to the dead-letter queue.
func (d *delivery) Malformed() error { return d.bad }

// settle removes the delivery from kombu's unacked hash and index and
// stores its next form (see settleScript); the subscription forgets it
// either way, so that if Redis did not take the settlement, a restore
// returns the message after the visibility timeout.
func (d *delivery) settle(ctx context.Context, mode, target string, payload []byte, score int64) error {
	s := d.s
	defer func() {
		s.mu.Lock()
		delete(s.held, d.tag)
		s.mu.Unlock()
	}()
	ok, err := settleScript.Run(ctx, s.b.rdb, []string{s.b.key(unackedKey), s.b.key(unackedIndexKey), target},
		d.tag, mode, payload, score).Int()
	if err != nil {
		return fmt.Errorf("kombu: settling a delivery of %q: %w", s.topic, err)
	}
	if ok == 0 {
		return fmt.Errorf("%w (queue %q, delivery tag %s)", ErrRestored, s.topic, d.tag)
	}
	return nil
}

// Ack removes the delivery from kombu's unacked hash and index.
func (d *delivery) Ack(ctx context.Context) error {
	return d.settle(ctx, "ack", d.s.b.key(unackedKey), nil, 0)
}

// Retry puts the message back, numbered attempts+1: at the left end of
// its queue (behind the others) at once, or into the queue's delayed set
// with a delay, whence a subscription moves it to the right end of the
// queue when due.
func (d *delivery) Retry(ctx context.Context, delay time.Duration, attempts int) error {
	s := d.s
	raw, err := redelivery(d.raw, attempts+1)
	if err != nil {
		return err
	}
	if delay > 0 {
		due := time.Now().Add(delay).UnixMilli()
		member := append([]byte(strconv.Itoa(d.priority)+"|"), raw...)
		return d.settle(ctx, "zadd", s.b.key(delayedPrefix+s.topic), member, due)
	}
	return d.settle(ctx, "lpush", s.lists[d.priority/3], raw, 0)
}

// DeadLetter pushes dead onto the dead-letter queue topic, in the step
// that removes the delivery from the unacked hash.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	raw, err := encode(dead, topic, 1)
	if err != nil {
		return err
	}
	return d.settle(ctx, "lpush", d.s.b.queueKey(topic, 0), raw, 0)
}
