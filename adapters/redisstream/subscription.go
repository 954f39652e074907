package redisstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
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

// subscription is one consumer of a group. A goroutine of its own (run)
// keeps its window full: it fetches entries (see fetch) over a
// connection of its own, blocks on XREAD when there is nothing to fetch,
// renews the entries it holds and claims abandoned ones. A second
// goroutine (acker) sends Acks to Redis in batches.
type subscription struct {
	b        *Broker
	topic    string
	group    string
	opts     bus.SubscribeOptions
	keys     [2]string // main stream, retry stream
	delayed  string
	consumer string
	log      *slog.Logger
	rdb      *redis.Client // this subscription's own connection

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu           sync.Mutex
	closed       bool
	buf          []*delivery            // fetched, not yet handed out
	held         map[*delivery]struct{} // buffered or unsettled: the window
	wake         chan struct{}          // closed when buf gains entries
	promoteAt    time.Time
	promoteTimer *time.Timer

	slot      chan struct{} // room in the window may have changed
	done      chan struct{} // closed by Close
	loopDone  chan struct{}
	acks      chan *ackRequest
	ackerDone chan struct{}
	settling  sync.WaitGroup // settlements and promotions under way
	closeOnce sync.Once
	closeErr  error
}

func newSubscription(b *Broker, topic string, opts bus.SubscribeOptions) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	return &subscription{
		b:         b,
		topic:     topic,
		group:     opts.Group,
		opts:      opts,
		keys:      [2]string{topic, retryKey(topic, opts.Group)},
		delayed:   delayedKey(topic, opts.Group),
		consumer:  consumerName(),
		log:       b.opts.Logger,
		ctx:       ctx,
		cancel:    cancel,
		held:      map[*delivery]struct{}{},
		wake:      make(chan struct{}),
		slot:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		loopDone:  make(chan struct{}),
		acks:      make(chan *ackRequest, maxAckBatch),
		ackerDone: make(chan struct{}),
	}
}

// start connects, creates the group and starts the goroutines.
func (s *subscription) start(ctx context.Context) error {
	o := s.b.opts.client(1)
	o.PipelinePoolSize = -1
	s.rdb = redis.NewClient(o)
	dctx, cancel := context.WithTimeout(ctx, s.b.opts.DialTimeout)
	defer cancel()
	// Loading the fetch script doubles as the connection check.
	err := fetchScript.Load(dctx, s.rdb).Err()
	if err != nil {
		err = s.b.dialError(err)
	} else {
		err = s.b.ensureGroups(dctx, s.topic, s.group)
	}
	if err != nil {
		s.rdb.Close()
		s.cancel()
		return err
	}
	go s.run()
	go s.acker()
	return nil
}

// Receive hands out the next fetched delivery. See bus.Subscription.
func (s *subscription) Receive(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, bus.ErrClosed
		}
		if len(s.buf) > 0 {
			d := s.buf[0]
			s.buf[0] = nil
			s.buf = s.buf[1:]
			d.handed = true
			dry := len(s.buf) == 0
			s.mu.Unlock()
			if dry {
				// The loop may be saving up room for a larger fetch.
				s.poke()
			}
			return d, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-s.done:
			return nil, bus.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops fetching, waits for settlements under way, and gives every
// entry the subscription still holds back to the group, where the next
// claim of any consumer takes it. See bus.Subscription.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		if s.promoteTimer != nil {
			s.promoteTimer.Stop()
		}
		s.mu.Unlock()
		s.cancel()
		// Closing the connection ends a blocked XREAD at once.
		s.rdb.Close()
		<-s.loopDone
		s.settling.Wait()
		close(s.acks)
		<-s.ackerDone
		s.closeErr = s.release()
		s.b.forget(s)
	})
	return s.closeErr
}

// release runs releaseScript for everything the subscription holds.
func (s *subscription) release() error {
	args := []any{s.group, s.consumer, parkingConsumer, givenBackIdle.Milliseconds()}
	// The loop has ended, so buf no longer changes.
	for _, d := range s.buf {
		args = append(args, d.stream, d.id, max(d.count-1, 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.DialTimeout+s.b.opts.ReadTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, s.b.rdb, s.keys[:], args...).Err(); err != nil {
		return fmt.Errorf("redisstream: giving back the deliveries of %q group %q (they return after the visibility timeout): %w",
			s.topic, s.group, err)
	}
	return nil
}

// room is how many more entries to fetch now: none while the buffer
// still feeds Receive and less than half the window is free, so that a
// busy subscription fetches in large batches rather than one entry per
// settlement.
func (s *subscription) room() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.opts.Prefetch - len(s.held)
	if len(s.buf) > 0 && free < (s.opts.Prefetch+1)/2 {
		return 0
	}
	return free
}

func (s *subscription) run() {
	defer close(s.loopDone)
	o := s.b.opts
	renewEvery := o.VisibilityTimeout / 3
	now := time.Now()
	var (
		nextClaim time.Time // zero: claim at once, taking what closed subscriptions gave back
		nextRenew = now.Add(renewEvery)
		nextTrim  = now
		nextReap  = now.Add(o.VisibilityTimeout)
		cursors   = [2]string{"0-0", "0-0"}
		pause     time.Duration
	)
	for s.ctx.Err() == nil {
		if pause > 0 && !s.sleep(pause) {
			return
		}
		now = time.Now()
		if !now.Before(nextRenew) {
			s.renew()
			nextRenew = now.Add(renewEvery)
		}
		if !now.Before(nextReap) {
			idle := reapAfter * o.VisibilityTimeout.Milliseconds()
			if err := reapScript.Run(s.ctx, s.rdb, s.keys[:], s.group, idle).Err(); err != nil && s.ctx.Err() == nil {
				s.log.Warn("redisstream: deleting idle consumers failed", "topic", s.topic, "group", s.group, "error", err)
			}
			nextReap = now.Add(o.VisibilityTimeout)
		}
		if o.TrimInterval > 0 && !now.Before(nextTrim) {
			if _, err := s.b.Trim(s.ctx, s.topic); err != nil && s.ctx.Err() == nil {
				s.log.Warn("redisstream: trim failed", "topic", s.topic, "error", err)
			}
			nextTrim = now.Add(o.TrimInterval)
		}
		free := s.room()
		if free <= 0 {
			s.waitRoom(time.Until(nextRenew))
			continue
		}
		claim := !now.Before(nextClaim)
		res, err := s.fetch(free, claim, cursors)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if strings.Contains(err.Error(), "NOGROUP") {
				// The stream was deleted under us; start it again.
				err = s.b.ensureGroups(s.ctx, s.topic, s.group)
			}
			if err != nil {
				s.log.Warn("redisstream: fetching failed; retrying", "topic", s.topic, "group", s.group, "error", err)
			}
			pause = min(max(2*pause, 50*time.Millisecond), 5*time.Second)
			continue
		}
		pause = 0
		if claim {
			cursors = res.cursors
			if cursors == [2]string{"0-0", "0-0"} {
				nextClaim = now.Add(o.ClaimInterval)
			}
		}
		if res.nextDue >= 0 {
			s.schedulePromote(time.Duration(res.nextDue) * time.Millisecond)
		}
		if len(res.entries) > 0 {
			s.accept(res.entries)
			continue
		}
		if res.last[0] == "" {
			// The script did not run (it was being loaded again).
			continue
		}
		wait := min(time.Until(nextClaim), time.Until(nextRenew), time.Until(nextReap))
		if o.TrimInterval > 0 {
			wait = min(wait, time.Until(nextTrim))
		}
		if wait < time.Millisecond {
			continue
		}
		// Wake when either stream gains an entry newer than the newest
		// seen: new work for the group, or a retry due.
		err = s.rdb.XRead(s.ctx, &redis.XReadArgs{
			Streams: []string{s.keys[0], s.keys[1], res.last[0], res.last[1]},
			Count:   1,
			Block:   wait,
		}).Err()
		if err != nil && !errors.Is(err, redis.Nil) {
			if s.ctx.Err() != nil {
				return
			}
			s.log.Warn("redisstream: waiting for entries failed; retrying", "topic", s.topic, "group", s.group, "error", err)
			pause = min(max(2*pause, 50*time.Millisecond), 5*time.Second)
		}
	}
}

// sleep waits for d, or returns false when the subscription closes.
func (s *subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// waitRoom waits until a settlement frees room in the window, or for d.
func (s *subscription) waitRoom(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.slot:
	case <-t.C:
	case <-s.done:
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

func (s *subscription) fetch(want int, claim bool, cursors [2]string) (fetched, error) {
	claimFlag := "0"
	if claim {
		claimFlag = "1"
	}
	keys := []string{s.keys[0], s.keys[1], s.delayed}
	args := []any{s.group, s.consumer, want, claimFlag, s.b.opts.VisibilityTimeout.Milliseconds(), cursors[0], cursors[1], "1"}
	if want <= smallFetch {
		v, err := fetchScript.Run(s.ctx, s.rdb, keys, args...).Result()
		if err != nil {
			return fetched{}, err
		}
		return parseFetched(v)
	}
	side := want / 4
	args[2], args[7] = side, "0"
	pipe := s.rdb.Pipeline()
	script := pipe.EvalSha(s.ctx, fetchScript.Hash(), keys, args...)
	main := pipe.XReadGroup(s.ctx, &redis.XReadGroupArgs{
		Group: s.group, Consumer: s.consumer, Streams: []string{s.keys[0], ">"}, Count: int64(want - side), Block: -1,
	})
	pipe.Exec(s.ctx)
	// What the XREADGROUP took is this consumer's now, whatever became of
	// the script.
	var f fetched
	v, serr := script.Result()
	if serr == nil {
		f, serr = parseFetched(v)
	} else if strings.HasPrefix(serr.Error(), "NOSCRIPT") {
		// Flushed from the server's cache; load it for the next fetch.
		serr = fetchScript.Load(s.ctx, s.rdb).Err()
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

// accept turns fetched entries into deliveries in the buffer. An entry
// delivered MaxAttempts times already, none of which was settled (its
// consumers crashed, or timed out, or gave it back), goes to the
// dead-letter stream instead.
func (s *subscription) accept(entries []entry) {
	ds := make([]*delivery, 0, len(entries))
	for _, e := range entries {
		m, base := decode(e.id, e.fields)
		d := &delivery{s: s, stream: e.stream, id: e.id, count: e.count, attempt: base + e.count, fields: e.fields, msg: m}
		m.Attempt = d.attempt
		if s.opts.MaxAttempts > 0 && d.attempt > s.opts.MaxAttempts {
			reason := fmt.Errorf("redisstream: delivered %d times without being settled", d.attempt-1)
			if err := s.deadLetter(s.ctx, d, reason, d.attempt-1); err != nil && s.ctx.Err() == nil {
				// It stays pending and is claimed again later.
				s.log.Warn("redisstream: dead-lettering failed", "topic", s.topic, "group", s.group, "id", m.ID, "error", err)
			}
			continue
		}
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Kept even when closed: release reads buf to lower delivery counts.
	s.buf = append(s.buf, ds...)
	for _, d := range ds {
		s.held[d] = struct{}{}
	}
	close(s.wake)
	s.wake = make(chan struct{})
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
		d.lost = true
		if !d.handed {
			delete(s.held, d)
			for i, b := range s.buf {
				if b == d {
					s.buf = append(s.buf[:i], s.buf[i+1:]...)
					break
				}
			}
		}
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
	s.settling.Add(1)
	s.mu.Unlock()
	defer s.settling.Done()
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

// deadLetter moves d's message to the dead-letter stream with attempts
// recorded, acking d in the same step.
func (s *subscription) deadLetter(ctx context.Context, d *delivery, reason error, attempts int) error {
	m, _ := decode(d.id, d.fields)
	m.Attempt = attempts
	dead := bus.DeadLetter(m, s.topic, s.group, reason, time.Now())
	args := append([]any{s.group, s.consumer, d.id, d.stream}, encode(dead, 0)...)
	res, err := deadLetterScript.Run(ctx, s.b.rdb, []string{s.keys[d.stream], s.opts.DeadLetterTopic}, args...).Int()
	if err != nil {
		return fmt.Errorf("redisstream: dead-letter to %q: %w", s.opts.DeadLetterTopic, err)
	}
	if res < 0 {
		return fmt.Errorf("redisstream: dead-letter %s: %w", m.ID, ErrReclaimed)
	}
	return nil
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

// delivery is one entry handed out (or about to be) by a subscription.
type delivery struct {
	s       *subscription
	stream  int
	id      string // stream entry ID
	count   int    // delivery count in the pending list
	attempt int
	fields  []string // as stored, for retries and dead letters
	msg     *bus.Message
	handed  bool // guarded by s.mu
	lost    bool // claimed by another consumer; guarded by s.mu
	settled atomic.Bool
}

func (d *delivery) Message() *bus.Message { return d.msg }

// begin starts a settlement: it fails on a second settlement and after
// Close.
func (d *delivery) begin() error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrAlreadyAcked
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return bus.ErrClosed
	}
	s.settling.Add(1)
	return nil
}

// end finishes a settlement and frees its room in the window.
func (d *delivery) end() {
	s := d.s
	s.mu.Lock()
	delete(s.held, d)
	s.mu.Unlock()
	s.poke()
	s.settling.Done()
}

// poke wakes the loop when it waits for room in the window.
func (s *subscription) poke() {
	select {
	case s.slot <- struct{}{}:
	default:
	}
}

// Ack acknowledges the entry with XACK, batched with other Acks of the
// subscription; it returns once Redis has replied. When ctx ends first,
// Ack returns ctx's error and the XACK may still happen.
func (d *delivery) Ack(ctx context.Context) error {
	if err := d.begin(); err != nil {
		return err
	}
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

// Nack acks the entry and, in the same step on the server, either appends
// its dead-letter copy to the dead-letter stream or enqueues a retry for
// this group alone: into the group's retry stream at once, or into its
// delayed set for opts.Delay. A postponed delivery is never dead-lettered
// and keeps its attempt number. See bus.Delivery.
func (d *delivery) Nack(ctx context.Context, opts bus.NackOptions) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.end()
	s := d.s
	// A postponed delivery was no attempt: its retry entry records one
	// attempt fewer, so the next delivery has this one's number.
	done := d.attempt
	if opts.Postpone {
		done--
	} else if opts.DeadLetter || s.opts.Exhausted(d.attempt) {
		return s.deadLetter(ctx, d, opts.Reason, d.attempt)
	}
	delay := max(opts.Delay, 0)
	ms := int64((delay + time.Millisecond - 1) / time.Millisecond)
	m, _ := decode(d.id, d.fields)
	args := append([]any{s.group, s.consumer, d.id, d.stream, ms}, encode(m, done)...)
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
