package redisstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// maxAckBatch bounds the XACKs sent in one pipeline.
const maxAckBatch = 1024

// reapAfter is how many visibility timeouts a consumer that holds nothing
// stays in its group after its last read, before live consumers delete
// it.
const reapAfter = 4

// givenBackIdle is the idle time that Close gives the entries it hands
// back: past any visibility timeout, so the next claim takes them, yet
// small enough that Redis does not clamp it (it resets idle times that
// reach before the epoch).
const givenBackIdle = 30 * 24 * time.Hour

// subscription is one consumer of a group, the driver side of a
// bus.Subscription. Receive fetches entries (see fetch) over a connection
// of its own and blocks on XREAD when there is nothing to fetch; a
// goroutine of its own (keep) renews the entries it holds, deletes idle
// consumers and trims; a second one (acker) sends Acks in batches.
type subscription struct {
	b        *conn
	topic    string
	group    string
	keys     [2]string // main stream, retry stream
	delayed  string
	consumer string
	log      *slog.Logger
	rdb      redis.UniversalClient // this subscription's own connection (one per node of a cluster)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	// Receive's own, as the portable side calls it from one goroutine.
	nextClaim time.Time // zero: claim at once, taking what closed subscriptions gave back
	cursors   [2]string

	mu           sync.Mutex
	closed       bool
	held         map[*delivery]struct{} // fetched and not settled
	promoteAt    time.Time
	promoteTimer *time.Timer

	keepDone  chan struct{}
	acks      chan *ackRequest
	ackerDone chan struct{}
	promoting sync.WaitGroup
}

func newSubscription(b *conn, topic string, opts bus.SubscribeOptions) (*subscription, error) {
	retry, err := b.retryKey(topic, opts.Group)
	if err != nil {
		return nil, err
	}
	delayed, _ := b.delayedKey(topic, opts.Group)
	ctx, cancel := context.WithCancel(context.Background())
	return &subscription{
		b:         b,
		topic:     topic,
		group:     opts.Group,
		keys:      [2]string{topic, retry},
		delayed:   delayed,
		consumer:  consumerName(),
		log:       b.opts.Logger,
		ctx:       ctx,
		cancel:    cancel,
		cursors:   [2]string{"0-0", "0-0"},
		held:      map[*delivery]struct{}{},
		keepDone:  make(chan struct{}),
		acks:      make(chan *ackRequest, maxAckBatch),
		ackerDone: make(chan struct{}),
	}, nil
}

// start connects, creates the group and starts the goroutines.
func (s *subscription) start(ctx context.Context) error {
	s.rdb = s.b.opts.newClient(1, -1)
	dctx, cancel := context.WithTimeout(ctx, s.b.opts.DialTimeout)
	defer cancel()
	// Loading the fetch script doubles as the connection check.
	err := fetchScript.Load(dctx, s.rdb).Err()
	if err != nil {
		err = s.b.dialError(err)
	} else {
		err = s.b.ensureGroups(dctx, s.topic, s.keys[1], s.group)
	}
	if err != nil {
		s.rdb.Close()
		s.cancel()
		return err
	}
	go s.keep()
	go s.acker()
	return nil
}

// Close stops the background work, waits for the batched Acks, and gives
// every entry the subscription still holds back to the group, where the
// next claim of any consumer takes it; those never handed out get their
// delivery count lowered back.
func (s *subscription) Close(ctx context.Context, unhanded, _ []driver.Delivery) error {
	s.mu.Lock()
	s.closed = true
	if s.promoteTimer != nil {
		s.promoteTimer.Stop()
	}
	s.mu.Unlock()
	s.cancel()
	s.rdb.Close()
	<-s.keepDone
	s.promoting.Wait()
	close(s.acks)
	<-s.ackerDone
	err := s.release(ctx, unhanded)
	s.b.forget(s)
	return err
}

// release runs releaseScript for everything the subscription holds.
func (s *subscription) release(ctx context.Context, unhanded []driver.Delivery) error {
	args := []any{s.group, s.consumer, parkingConsumer, givenBackIdle.Milliseconds()}
	for _, x := range unhanded {
		d := x.(*delivery)
		args = append(args, d.stream, d.id, max(d.count-1, 0))
	}
	ctx, cancel := context.WithTimeout(ctx, s.b.opts.DialTimeout+s.b.opts.ReadTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, s.b.rdb, s.keys[:], args...).Err(); err != nil {
		return fmt.Errorf("redisstream: giving back the deliveries of %q group %q (they return after the visibility timeout): %w",
			s.topic, s.group, err)
	}
	return nil
}

// keep renews the entries the subscription holds every third of the
// visibility timeout, deletes the group's long idle consumers, and trims
// the stream when Options.TrimInterval asks, until Close.
func (s *subscription) keep() {
	defer close(s.keepDone)
	o := s.b.opts
	renew := time.NewTicker(o.VisibilityTimeout / 3)
	defer renew.Stop()
	reap := time.NewTicker(o.VisibilityTimeout)
	defer reap.Stop()
	var trim <-chan time.Time
	if o.TrimInterval > 0 {
		t := time.NewTicker(o.TrimInterval)
		defer t.Stop()
		trim = t.C
		s.trim()
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-renew.C:
			s.renew()
		case <-reap.C:
			idle := reapAfter * o.VisibilityTimeout.Milliseconds()
			if err := reapScript.Run(s.ctx, s.b.rdb, s.keys[:], s.group, idle).Err(); err != nil && s.ctx.Err() == nil {
				s.log.Warn("redisstream: deleting idle consumers failed", "topic", s.topic, "group", s.group, "error", err)
			}
		case <-trim:
			s.trim()
		}
	}
}

func (s *subscription) trim() {
	if _, err := s.b.trim(s.ctx, s.topic); err != nil && s.ctx.Err() == nil {
		s.log.Warn("redisstream: trim failed", "topic", s.topic, "error", err)
	}
}

// Receive fetches up to max entries, claiming abandoned ones every
// ClaimInterval, and waits on XREAD while there is nothing to fetch.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	o := s.b.opts
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		now := time.Now()
		claim := !now.Before(s.nextClaim)
		res, err := s.fetch(ctx, max, claim, s.cursors)
		ds := s.accept(res.entries)
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") && ctx.Err() == nil {
				// The stream was deleted under us; start it again.
				if gerr := s.b.ensureGroups(ctx, s.topic, s.keys[1], s.group); gerr != nil {
					err = gerr
				}
			}
			return ds, err
		}
		if claim {
			s.cursors = res.cursors
			if s.cursors == [2]string{"0-0", "0-0"} {
				s.nextClaim = now.Add(o.ClaimInterval)
			}
		}
		if res.nextDue >= 0 {
			s.schedulePromote(time.Duration(res.nextDue) * time.Millisecond)
		}
		if len(ds) > 0 {
			return ds, nil
		}
		if res.last[0] == "" {
			// The script did not run (it was being loaded again).
			continue
		}
		wait := min(time.Until(s.nextClaim), o.VisibilityTimeout/3)
		if wait < time.Millisecond {
			continue
		}
		// Wake when either stream gains an entry newer than the newest
		// seen: new work for the group, or a retry due. Closing the
		// connection ends a blocked XREAD at once.
		stop := context.AfterFunc(ctx, func() { s.rdb.Close() })
		err = s.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{s.keys[0], s.keys[1], res.last[0], res.last[1]},
			Count:   1,
			Block:   wait,
		}).Err()
		stop()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
	}
}

// entry is one stream entry taken by fetchScript.
type entry struct {
	stream int // 0: main stream, 1: retry stream
	id     string
	count  int // delivery count in the pending list
	fields []string
}

type fetched struct {
	entries []entry
	nextDue int64 // ms until the next delayed retry, or -1
	last    [2]string
	cursors [2]string
}

// smallFetch is the largest fetch made by fetchScript alone. Larger
// fetches leave a share for claims and retries to the script and read the
// rest of the main stream in the same pipeline with a plain XREADGROUP,
// which spares Redis copying every message through Lua.
const smallFetch = 16

func (s *subscription) fetch(ctx context.Context, want int, claim bool, cursors [2]string) (fetched, error) {
	claimFlag := "0"
	if claim {
		claimFlag = "1"
	}
	keys := []string{s.keys[0], s.keys[1], s.delayed}
	args := []any{s.group, s.consumer, want, claimFlag, s.b.opts.VisibilityTimeout.Milliseconds(), cursors[0], cursors[1], "1"}
	if want <= smallFetch {
		v, err := fetchScript.Run(ctx, s.rdb, keys, args...).Result()
		if err != nil {
			return fetched{}, err
		}
		return parseFetched(v)
	}
	side := want / 4
	args[2], args[7] = side, "0"
	pipe := s.rdb.Pipeline()
	script := pipe.EvalSha(ctx, fetchScript.Hash(), keys, args...)
	main := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: s.group, Consumer: s.consumer, Streams: []string{s.keys[0], ">"}, Count: int64(want - side), Block: -1,
	})
	pipe.Exec(ctx)
	// What the XREADGROUP took is this consumer's now, whatever became of
	// the script.
	var f fetched
	v, serr := script.Result()
	if serr == nil {
		f, serr = parseFetched(v)
	} else if strings.HasPrefix(serr.Error(), "NOSCRIPT") {
		// Flushed from the server's cache; load it for the next fetch.
		serr = fetchScript.Load(ctx, s.rdb).Err()
		f.nextDue = -1
		f.cursors = cursors
	}
	streams, rerr := main.Result()
	if rerr != nil && !errors.Is(rerr, redis.Nil) {
		if serr == nil {
			serr = rerr
		}
	}
	for _, st := range streams {
		for _, m := range st.Messages {
			fields := make([]string, 0, 2*len(m.Values))
			for k, v := range m.Values {
				str, _ := v.(string)
				fields = append(fields, k, str)
			}
			f.entries = append(f.entries, entry{stream: 0, id: m.ID, count: 1, fields: fields})
		}
	}
	if len(f.entries) > 0 {
		// Whatever else failed, the entries are delivered; the caller
		// retries the rest on its next fetch.
		return f, nil
	}
	return f, serr
}

var errReply = errors.New("redisstream: unexpected reply from fetch script")

func parseFetched(v any) (fetched, error) {
	top, ok := v.([]any)
	if !ok || len(top) != 6 {
		return fetched{}, errReply
	}
	var f fetched
	list, _ := top[0].([]any)
	f.entries = make([]entry, 0, len(list))
	for _, x := range list {
		e, ok := x.([]any)
		if !ok || len(e) != 4 {
			return fetched{}, errReply
		}
		stream, _ := e[0].(int64)
		id, _ := e[1].(string)
		count, _ := e[2].(int64)
		raw, _ := e[3].([]any)
		fields := make([]string, len(raw))
		for i, r := range raw {
			fields[i], _ = r.(string)
		}
		f.entries = append(f.entries, entry{stream: int(stream), id: id, count: int(count), fields: fields})
	}
	f.nextDue, _ = top[1].(int64)
	f.last[0], _ = top[2].(string)
	f.last[1], _ = top[3].(string)
	f.cursors[0], _ = top[4].(string)
	f.cursors[1], _ = top[5].(string)
	return f, nil
}

// accept turns fetched entries into deliveries held by the subscription.
func (s *subscription) accept(entries []entry) []driver.Delivery {
	if len(entries) == 0 {
		return nil
	}
	ds := make([]driver.Delivery, len(entries))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range entries {
		m, base := decode(e.id, e.fields)
		d := &delivery{s: s, stream: e.stream, id: e.id, count: e.count, fields: e.fields, msg: m}
		m.Attempt = base + e.count
		s.held[d] = struct{}{}
		ds[i] = d
	}
	return ds
}

// renew resets the idle time of the held entries. Entries claimed away
// meanwhile are dropped from the buffer, or, when handed out, no longer
// renewed.
func (s *subscription) renew() {
	type ref struct {
		stream int
		id     string
	}
	s.mu.Lock()
	args := make([]any, 0, 2+2*len(s.held))
	args = append(args, s.group, s.consumer)
	byRef := make(map[ref]*delivery, len(s.held))
	for d := range s.held {
		if !d.lost {
			args = append(args, d.stream, d.id)
			byRef[ref{d.stream, d.id}] = d
		}
	}
	s.mu.Unlock()
	if len(byRef) == 0 {
		return
	}
	v, err := renewScript.Run(s.ctx, s.rdb, s.keys[:], args...).Slice()
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("redisstream: renewing deliveries failed", "topic", s.topic, "group", s.group, "error", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range v {
		l, ok := x.([]any)
		if !ok || len(l) != 2 {
			continue
		}
		stream, _ := l[0].(int64)
		id, _ := l[1].(string)
		d := byRef[ref{int(stream), id}]
		if d == nil {
			continue
		}
		// Handed out, it can no longer be settled; waiting for hand-out,
		// it is dropped then (see HandOff).
		d.lost = true
	}
}

// schedulePromote makes sure promote runs within d.
func (s *subscription) schedulePromote(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	at := time.Now().Add(d)
	if !s.promoteAt.IsZero() && !at.Before(s.promoteAt) {
		return
	}
	s.promoteAt = at
	if s.promoteTimer == nil {
		s.promoteTimer = time.AfterFunc(d, s.promote)
	} else {
		s.promoteTimer.Reset(d)
	}
}

// promote moves the group's due retries into its retry stream, which
// wakes the group's consumers, and schedules itself for the next one.
func (s *subscription) promote() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.promoteAt = time.Time{}
	s.promoting.Add(1)
	s.mu.Unlock()
	defer s.promoting.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.b.opts.ReadTimeout)
	defer cancel()
	next, err := promoteScript.Run(ctx, s.b.rdb, []string{s.delayed, s.keys[1]}).Int64()
	switch {
	case err != nil:
		if s.ctx.Err() == nil {
			s.log.Warn("redisstream: moving due retries failed", "topic", s.topic, "group", s.group, "error", err)
			s.schedulePromote(s.b.opts.ClaimInterval)
		}
	case next >= 0:
		s.schedulePromote(time.Duration(next)*time.Millisecond + time.Millisecond)
	}
}

type ackRequest struct {
	d    *delivery
	done chan error
}

// acker sends the queued Acks: whatever queued up while the previous
// batch was on the wire goes in the next pipeline, so acks cost one round
// trip per batch without waiting to fill one.
func (s *subscription) acker() {
	defer close(s.ackerDone)
	batch := make([]*ackRequest, 0, 64)
	for r := range s.acks {
		batch = append(batch[:0], r)
	more:
		for len(batch) < maxAckBatch {
			select {
			case r, ok := <-s.acks:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.flushAcks(batch)
	}
}

func (s *subscription) flushAcks(batch []*ackRequest) {
	var ids [2][]string
	for _, r := range batch {
		ids[r.d.stream] = append(ids[r.d.stream], r.d.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.DialTimeout+s.b.opts.ReadTimeout)
	defer cancel()
	pipe := s.b.rdb.Pipeline()
	var acked [2]*redis.IntCmd
	for i := range ids {
		if len(ids[i]) > 0 {
			acked[i] = pipe.XAck(ctx, s.keys[i], s.group, ids[i]...)
		}
	}
	if len(ids[1]) > 0 {
		// A retry entry belongs to this group alone: once acked it goes.
		pipe.XDel(ctx, s.keys[1], ids[1]...)
	}
	pipe.Exec(ctx)
	for _, r := range batch {
		err := acked[r.d.stream].Err()
		if err != nil {
			err = fmt.Errorf("redisstream: ack %s: %w", r.d.msg.ID, err)
		}
		r.d.end()
		r.done <- err
	}
}

// delivery is one entry fetched by a subscription.
type delivery struct {
	s      *subscription
	stream int
	id     string   // stream entry ID
	count  int      // delivery count in the pending list
	fields []string // as stored, for retries and dead letters
	msg    *bus.Message
	lost   bool // claimed by another consumer; guarded by s.mu
}

func (d *delivery) Message() *bus.Message { return d.msg }

// HandOff drops a delivery that another consumer claimed while it waited
// to be handed out.
func (d *delivery) HandOff() bool {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.lost {
		delete(s.held, d)
		return false
	}
	return true
}

// end forgets d once its settlement was tried: the subscription no
// longer renews it, so if the settlement did not reach Redis the entry
// stays pending and another claim takes it after the visibility timeout.
func (d *delivery) end() {
	s := d.s
	s.mu.Lock()
	delete(s.held, d)
	s.mu.Unlock()
}

// Ack acknowledges the entry with XACK, batched with other Acks of the
// subscription; it returns once Redis has replied. When ctx ends first,
// Ack returns ctx's error and the XACK may still happen.
func (d *delivery) Ack(ctx context.Context) error {
	r := &ackRequest{d: d, done: make(chan error, 1)}
	select {
	case d.s.acks <- r:
	case <-ctx.Done():
		d.end()
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry acks the entry and, in the same step on the server, enqueues a
// retry for this group alone: into the group's retry stream at once, or
// into its delayed set for delay. The retry entry records attempts, so
// the next delivery is numbered attempts+1.
func (d *delivery) Retry(ctx context.Context, delay time.Duration, attempts int) error {
	defer d.end()
	s := d.s
	ms := int64((delay + time.Millisecond - 1) / time.Millisecond)
	m, _ := decode(d.id, d.fields)
	args := append([]any{s.group, s.consumer, d.id, d.stream, ms}, encode(m, attempts)...)
	res, err := retryScript.Run(ctx, s.b.rdb, []string{s.keys[d.stream], s.keys[1], s.delayed}, args...).Int()
	if err != nil {
		return fmt.Errorf("redisstream: nack %s: %w", m.ID, err)
	}
	if res < 0 {
		return fmt.Errorf("redisstream: nack %s: %w", m.ID, ErrReclaimed)
	}
	if ms > 0 {
		s.schedulePromote(time.Duration(ms) * time.Millisecond)
	}
	return nil
}

// DeadLetter appends dead to the dead-letter stream topic and acks the
// entry, in one step on the server. On a cluster where topic lives in
// another hash slot than the entry's stream it takes two: the append,
// after checking that this consumer still holds the entry, then the
// checked ack; a failure between them leaves the entry pending, to be
// delivered (and perhaps dead-lettered) again: a copy too many in the
// dead-letter stream, never a loss.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	defer d.end()
	s := d.s
	args := append([]any{s.group, s.consumer, d.id, d.stream}, encode(dead, 0)...)
	keys := []string{s.keys[d.stream], topic}
	if s.b.opts.Cluster && redisconn.Slot(topic) != redisconn.Slot(s.keys[d.stream]) {
		if err := d.appendDeadLetter(ctx, topic, dead); err != nil {
			return err
		}
		keys, args = keys[:1], args[:4]
	}
	res, err := deadLetterScript.Run(ctx, s.b.rdb, keys, args...).Int()
	if err != nil {
		return fmt.Errorf("redisstream: dead-letter to %q: %w", topic, err)
	}
	if res < 0 {
		return fmt.Errorf("redisstream: dead-letter %s: %w", dead.ID, ErrReclaimed)
	}
	return nil
}

// appendDeadLetter appends dead to the dead-letter stream topic when this
// consumer still holds d's entry.
func (d *delivery) appendDeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	s := d.s
	p, err := s.b.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: s.keys[d.stream], Group: s.group, Start: d.id, End: d.id, Count: 1,
	}).Result()
	if err != nil {
		return fmt.Errorf("redisstream: dead-letter to %q: %w", topic, err)
	}
	if len(p) == 0 {
		return nil // settled meanwhile: the checked ack reports it
	}
	if p[0].Consumer != s.consumer {
		return fmt.Errorf("redisstream: dead-letter %s: %w", dead.ID, ErrReclaimed)
	}
	if err := s.b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: encode(dead, 0)}).Err(); err != nil {
		return fmt.Errorf("redisstream: dead-letter to %q: %w", topic, err)
	}
	return nil
}
