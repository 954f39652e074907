package rocketmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Response codes of a pull or heartbeat that mean the broker has not got
// (or lost) this member's subscription: heartbeat again.
const (
	respSubscriptionParseFailed = 23
	respSubscriptionNotExist    = 24
	respSubscriptionNotLatest   = 25
)

// subscription is one member of a RocketMQ consumer group.
type subscription struct {
	b          *client
	topic      string // omnibus topic
	opts       bus.SubscribeOptions
	rtopic     string // RocketMQ topic
	rgroup     string // RocketMQ consumer group
	retryTopic string // <rgroup>|retry
	clientID   string // this member's ID in the group: unique per subscription
	conns      *pool
	log        func(msg string, args ...any)

	ready   chan *delivery // unbuffered: pull loops hand over here
	kick    chan struct{}  // asks for a rebalance now
	closing chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu        sync.Mutex
	states    map[queueKey]*queueState
	unsettled map[*delivery]struct{} // received and not settled
	hbAt      time.Time
}

// queueKey names a queue of one of the subscription's two topics.
type queueKey struct {
	topic string
	q     queueRef
}

// queueState is a queue this member holds the lock of and pulls.
type queueState struct {
	key    queueKey
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	pending   map[int64]struct{} // pulled, not settled
	next      int64              // offset of the next pull
	committed int64
	handed    int // deliveries offered to Receive or handed out, not settled
}

// offer hands d over to Receive unless ctx ends first. d counts as
// handed from before the send, so that a release that follows sees it
// even when Receive has not taken it in yet.
func (s *subscription) offer(ctx context.Context, d *delivery) bool {
	d.qs.mu.Lock()
	d.qs.handed++
	d.qs.mu.Unlock()
	select {
	case s.ready <- d:
		return true
	case <-ctx.Done():
		d.qs.mu.Lock()
		d.qs.handed--
		d.qs.mu.Unlock()
		return false
	}
}

// commitOffset is the offset the group may resume from: the first
// unsettled message, or the next to pull.
func (qs *queueState) commitOffset() int64 {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	off := qs.next
	for o := range qs.pending {
		if o < off {
			off = o
		}
	}
	return off
}

func (b *client) subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	rgroup := groupName(opts.Group, topic)
	s := &subscription{
		b:          b,
		topic:      topic,
		opts:       opts,
		rtopic:     Name(topic, maxTopicLen),
		rgroup:     rgroup,
		retryTopic: rgroup + "|retry",
		clientID:   fmt.Sprintf("%s-%d", b.clientID, b.nsub.Add(1)),
		ready:      make(chan *delivery),
		kick:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		states:     map[queueKey]*queueState{},
		unsettled:  map[*delivery]struct{}{},
	}
	s.log = func(msg string, args ...any) {
		b.opts.Logger.Warn("rocketmq: "+msg, append([]any{"topic", topic, "group", opts.Group}, args...)...)
	}
	s.conns = newPool(b.opts, func(cmd *command) {
		if cmd.Code == codeNotifyConsumerIDs {
			s.trigger()
		}
	})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Joining takes a few round trips. A cancellation of ctx once they
	// have begun does not stop them (a half-joined member would have to
	// be taken apart again); ctx's deadline and RequestTimeout bound them.
	rctx, cancel := b.requestCtx(context.WithoutCancel(ctx))
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		var cancel2 context.CancelFunc
		rctx, cancel2 = context.WithDeadline(rctx, dl)
		defer cancel2()
	}
	if _, err := b.route(rctx, s.rtopic, b.opts.Queues, false); err != nil {
		s.conns.close()
		return nil, b.subscribeErr(ctx, err)
	}
	if err := s.heartbeat(rctx); err != nil {
		s.conns.close()
		return nil, b.subscribeErr(ctx, err)
	}
	if _, err := b.route(rctx, s.retryTopic, b.opts.Queues, false); err != nil {
		s.conns.close()
		return nil, b.subscribeErr(ctx, err)
	}
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		s.conns.close()
		return nil, bus.ErrClosed
	}
	b.subs[s] = struct{}{}
	s.wg.Add(1)
	b.mu.Unlock()
	// The first rebalance runs before Subscribe returns, so that the
	// member holds its queues when the caller publishes.
	s.rebalance(rctx)
	go s.run()
	return s, nil
}

func (b *client) subscribeErr(ctx context.Context, err error) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("rocketmq: subscribe: %w", err)
}

func (s *subscription) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run rebalances and commits until the subscription closes.
func (s *subscription) run() {
	defer s.wg.Done()
	rebalance := time.NewTicker(s.b.opts.RebalanceInterval)
	defer rebalance.Stop()
	commit := time.NewTicker(s.b.opts.CommitInterval)
	defer commit.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-rebalance.C:
			s.rebalance(s.ctx)
		case <-s.kick:
			s.rebalance(s.ctx)
		case <-commit.C:
			s.commitAll(s.ctx)
		}
	}
}

func (s *subscription) topics() []string { return []string{s.rtopic, s.retryTopic} }

// heartbeat tells every master of the subscription's topics that this
// member consumes them for its group.
func (s *subscription) heartbeat(ctx context.Context) error {
	type subData struct {
		ClassFilterMode bool     `json:"classFilterMode"`
		Topic           string   `json:"topic"`
		SubString       string   `json:"subString"`
		TagsSet         []string `json:"tagsSet"`
		CodeSet         []int    `json:"codeSet"`
		SubVersion      int64    `json:"subVersion"`
		ExpressionType  string   `json:"expressionType"`
	}
	var subsData []subData
	for _, t := range s.topics() {
		subsData = append(subsData, subData{Topic: t, SubString: "*", TagsSet: []string{}, CodeSet: []int{}, ExpressionType: "TAG"})
	}
	body, _ := json.Marshal(map[string]any{
		"clientID": s.clientID,
		"consumerDataSet": []map[string]any{{
			"groupName":           s.rgroup,
			"consumeType":         "CONSUME_PASSIVELY",
			"messageModel":        "CLUSTERING",
			"consumeFromWhere":    "CONSUME_FROM_FIRST_OFFSET",
			"subscriptionDataSet": subsData,
			"unitMode":            false,
		}},
		"producerDataSet": []any{},
	})
	// Slaves too: while a master is down, its queues are pulled from a
	// slave, which must know the group's members.
	nodes, err := s.b.clusterNodes(ctx, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, addr := range nodes {
		c, err := s.conns.get(ctx, addr)
		if err == nil {
			_, err = c.callOK(ctx, codeHeartbeat, nil, body)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
	}
	if len(errs) == len(nodes) && len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(errs) > 0 && ctx.Err() == nil {
		// A broker that is down does not keep the others from serving
		// the group; the next heartbeat tries it again.
		s.log("heartbeat failed on some brokers", "err", errors.Join(errs...))
	}
	s.mu.Lock()
	s.hbAt = time.Now()
	s.mu.Unlock()
	return nil
}

// members returns the client IDs of the group's members, sorted.
func (s *subscription) members(ctx context.Context, addr string) ([]string, error) {
	c, err := s.conns.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	resp, err := c.callOK(ctx, codeGetConsumerList, map[string]string{"consumerGroup": s.rgroup}, nil)
	if err != nil {
		return nil, err
	}
	var body struct {
		ConsumerIDList []string `json:"consumerIdList"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		return nil, fmt.Errorf("rocketmq: consumer list: %w", err)
	}
	sort.Strings(body.ConsumerIDList)
	return body.ConsumerIDList, nil
}

// allocate shares queues among members as RocketMQ's
// AllocateMessageQueueAveragely does, and returns self's share.
func allocate(queues []queueRef, members []string, self string) []queueRef {
	idx := sort.SearchStrings(members, self)
	if idx >= len(members) || members[idx] != self || len(queues) == 0 {
		return nil
	}
	n, m := len(queues), len(members)
	mod := n % m
	var size int
	switch {
	case n <= m:
		size = 1
	case mod > 0 && idx < mod:
		size = n/m + 1
	default:
		size = n / m
	}
	start := idx * size
	if !(mod > 0 && idx < mod) {
		start += mod
	}
	var out []queueRef
	for i := 0; i < size && start+i < n; i++ {
		out = append(out, queues[(start+i)%n])
	}
	return out
}

// rebalance works out which queues this member should pull, lets go of
// the others, and locks and starts the new ones. The broker's queue lock
// makes sure that two members never pull one queue at once.
func (s *subscription) rebalance(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	stale := time.Since(s.hbAt) > 10*time.Second
	s.mu.Unlock()
	if stale {
		if err := s.heartbeat(ctx); err != nil && ctx.Err() == nil {
			s.log("heartbeat failed", "err", err)
		}
	}
	want := map[queueKey]bool{}
	for _, t := range s.topics() {
		rt, err := s.b.route(ctx, t, 0, true)
		if err != nil {
			if ctx.Err() == nil {
				s.log("route lookup failed", "rocketmq_topic", t, "err", err)
			}
			return
		}
		if len(rt.read) == 0 {
			continue
		}
		members, err := s.members(ctx, rt.read[0].addr)
		if err != nil {
			if ctx.Err() == nil {
				s.log("member lookup failed", "err", err)
			}
			return
		}
		if !contains(members, s.clientID) {
			// The broker has not seen this member yet.
			if err := s.heartbeat(ctx); err != nil {
				if ctx.Err() == nil {
					s.log("heartbeat failed", "err", err)
				}
				return
			}
			members = append(members, s.clientID)
			sort.Strings(members)
		}
		for _, q := range allocate(rt.read, members, s.clientID) {
			want[queueKey{t, q}] = true
		}
	}
	s.mu.Lock()
	var drop []*queueState
	for k, qs := range s.states {
		if !want[k] {
			drop = append(drop, qs)
			delete(s.states, k)
		}
	}
	s.mu.Unlock()
	for _, qs := range drop {
		s.release(ctx, qs, s.b.opts.DrainTimeout)
	}
	// Lock (or renew the lock of) every wanted queue, per broker.
	byAddr := map[string][]queueKey{}
	for k := range want {
		byAddr[k.q.addr] = append(byAddr[k.q.addr], k)
	}
	for addr, keys := range byAddr {
		locked, err := s.lock(ctx, addr, keys)
		if err != nil {
			if ctx.Err() == nil {
				s.log("queue lock failed", "broker", addr, "err", err)
			}
			continue
		}
		for _, k := range keys {
			s.mu.Lock()
			qs, have := s.states[k]
			if have && !locked[k] {
				// The lock went to another member (after a broker
				// restart, say): stop pulling at once.
				delete(s.states, k)
			}
			s.mu.Unlock()
			switch {
			case have && !locked[k]:
				s.log("lost the lock of a queue", "queue", k.q.String())
				s.release(ctx, qs, 0)
			case !have && locked[k]:
				s.start(k)
			}
		}
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

type mqJSON struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueID    int    `json:"queueId"`
}

func mqOf(k queueKey) mqJSON { return mqJSON{Topic: k.topic, BrokerName: k.q.broker, QueueID: k.q.id} }

// lock asks the broker for the group's lock of keys' queues (a lock lasts
// a minute unless renewed) and returns those granted.
func (s *subscription) lock(ctx context.Context, addr string, keys []queueKey) (map[queueKey]bool, error) {
	c, err := s.conns.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	set := make([]mqJSON, len(keys))
	for i, k := range keys {
		set[i] = mqOf(k)
	}
	body, _ := json.Marshal(map[string]any{"consumerGroup": s.rgroup, "clientId": s.clientID, "onlyThisBroker": true, "mqSet": set})
	resp, err := c.callOK(ctx, codeLockBatchMQ, nil, body)
	if err != nil {
		return nil, err
	}
	var out struct {
		LockOKMQSet []mqJSON `json:"lockOKMQSet"`
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return nil, fmt.Errorf("rocketmq: lock response: %w", err)
	}
	ok := map[queueKey]bool{}
	for _, mq := range out.LockOKMQSet {
		for _, k := range keys {
			if mqOf(k) == mq {
				ok[k] = true
			}
		}
	}
	return ok, nil
}

func (s *subscription) unlock(ctx context.Context, k queueKey) {
	c, err := s.conns.get(ctx, k.q.addr)
	if err != nil {
		return
	}
	body, _ := json.Marshal(map[string]any{"consumerGroup": s.rgroup, "clientId": s.clientID, "mqSet": []mqJSON{mqOf(k)}})
	if _, err := c.callOK(ctx, codeUnlockBatchMQ, nil, body); err != nil && ctx.Err() == nil {
		s.log("queue unlock failed", "queue", k.q.String(), "err", err)
	}
}

// start begins pulling a queue this member has locked.
func (s *subscription) start(k queueKey) {
	ctx, cancel := context.WithCancel(s.ctx)
	qs := &queueState{key: k, cancel: cancel, done: make(chan struct{}), pending: map[int64]struct{}{}, committed: -1}
	s.mu.Lock()
	s.states[k] = qs
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(qs.done)
		s.pull(ctx, qs)
	}()
}

// release stops pulling a queue, waits up to drain for its deliveries in
// hand to be settled, stores its offset and unlocks it.
func (s *subscription) release(ctx context.Context, qs *queueState, drain time.Duration) {
	qs.cancel()
	<-qs.done
	deadline := time.Now().Add(drain)
	for {
		qs.mu.Lock()
		n := qs.handed
		qs.mu.Unlock()
		if n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.commit(ctx, qs)
	s.unlock(ctx, qs.key)
}

// queryOffset returns the group's stored offset of a queue; a group new
// to the queue starts at its first message.
func (s *subscription) queryOffset(ctx context.Context, k queueKey) (int64, error) {
	c, err := s.conns.get(ctx, k.q.addr)
	if err != nil {
		return 0, err
	}
	resp, err := c.call(ctx, codeQueryConsumerOffset, map[string]string{
		"consumerGroup": s.rgroup, "topic": k.topic, "queueId": strconv.Itoa(k.q.id), "setZeroIfNotFound": "false",
	}, nil)
	if err != nil {
		return 0, err
	}
	switch resp.Code {
	case respSuccess:
		off, err := strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("rocketmq: stored offset %q: %w", resp.ExtFields["offset"], err)
		}
		return off, nil
	case respQueryNotFound:
		return 0, nil
	}
	return 0, &ResponseError{Request: codeQueryConsumerOffset, Code: resp.Code, Remark: resp.Remark}
}

// commit stores a queue's offset on its broker when it moved.
func (s *subscription) commit(ctx context.Context, qs *queueState) {
	off := qs.commitOffset()
	qs.mu.Lock()
	same := off == qs.committed || off < 0
	qs.mu.Unlock()
	if same {
		return
	}
	c, err := s.conns.get(ctx, qs.key.q.addr)
	if err == nil {
		_, err = c.callOK(ctx, codeUpdateConsumerOffset, map[string]string{
			"consumerGroup": s.rgroup, "topic": qs.key.topic, "queueId": strconv.Itoa(qs.key.q.id), "commitOffset": itoa(off),
		}, nil)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log("offset commit failed", "queue", qs.key.q.String(), "err", err)
		}
		return
	}
	qs.mu.Lock()
	qs.committed = off
	qs.mu.Unlock()
}

func (s *subscription) commitAll(ctx context.Context) {
	s.mu.Lock()
	states := make([]*queueState, 0, len(s.states))
	for _, qs := range s.states {
		states = append(states, qs)
	}
	s.mu.Unlock()
	for _, qs := range states {
		s.commit(ctx, qs)
	}
}

// pull reads a queue from the group's offset and hands its messages over
// to Receive, in queue order, until ctx ends.
func (s *subscription) pull(ctx context.Context, qs *queueState) {
	k := qs.key
	backoff := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
			return true
		}
	}
	var off int64
	for {
		var err error
		off, err = s.queryOffset(ctx, k)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		s.log("offset lookup failed", "queue", k.q.String(), "err", err)
		if !backoff() {
			return
		}
	}
	qs.mu.Lock()
	qs.next, qs.committed = off, off
	qs.mu.Unlock()
	ext := map[string]string{
		"consumerGroup":        s.rgroup,
		"topic":                k.topic,
		"queueId":              strconv.Itoa(k.q.id),
		"maxMsgNums":           "32",
		"sysFlag":              "6", // suspend (long polling) | subscription
		"commitOffset":         "0",
		"suspendTimeoutMillis": itoa(s.b.opts.PollTimeout.Milliseconds()),
		"subscription":         "*",
		"subVersion":           "0",
		"expressionType":       "TAG",
	}
	for ctx.Err() == nil {
		c, err := s.conns.get(ctx, k.q.addr)
		if err != nil {
			if ctx.Err() == nil {
				s.log("connecting for a pull failed", "queue", k.q.String(), "err", err)
				backoff()
			}
			continue
		}
		ext["queueOffset"] = itoa(off)
		pctx, cancel := context.WithTimeout(ctx, s.b.opts.PollTimeout+s.b.opts.RequestTimeout)
		resp, err := c.call(pctx, codePullMessage, ext, nil)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log("pull failed", "queue", k.q.String(), "err", err)
				backoff()
			}
			continue
		}
		next, nerr := strconv.ParseInt(resp.ExtFields["nextBeginOffset"], 10, 64)
		switch resp.Code {
		case respSuccess:
		case respPullNotFound, respPullRetryImmediate:
			if nerr == nil && next > off {
				off = next
				qs.mu.Lock()
				qs.next = off
				qs.mu.Unlock()
			}
			continue
		case respPullOffsetMoved:
			if nerr == nil {
				s.log("offset moved", "queue", k.q.String(), "from", off, "to", next)
				off = next
				qs.mu.Lock()
				qs.next = off
				qs.mu.Unlock()
			}
			continue
		case respSubscriptionNotExist, respSubscriptionNotLatest, respSubscriptionParseFailed, respSubscriptionMissing:
			if err := s.heartbeat(ctx); err != nil && ctx.Err() == nil {
				s.log("heartbeat failed", "err", err)
			}
			backoff()
			continue
		default:
			s.log("pull refused", "queue", k.q.String(), "code", resp.Code, "remark", resp.Remark)
			backoff()
			continue
		}
		msgs, err := decodeMessages(resp.body, s.b.opts.MaxInflatedSize)
		if err != nil {
			s.log("pull response", "queue", k.q.String(), "err", err)
		}
		var batch []*wireMessage
		for _, m := range msgs {
			if m.queueOffset >= off {
				batch = append(batch, m)
			}
		}
		if nerr != nil || next <= off {
			if len(batch) == 0 {
				backoff()
				continue
			}
			next = batch[len(batch)-1].queueOffset + 1
		}
		qs.mu.Lock()
		for _, m := range batch {
			qs.pending[m.queueOffset] = struct{}{}
		}
		qs.next = next
		qs.mu.Unlock()
		off = next
		for _, m := range batch {
			if !s.offer(ctx, &delivery{s: s, qs: qs, offset: m.queueOffset, msg: m.toBus()}) {
				return
			}
		}
	}
}

// Receive takes up to max deliveries from the pull loops, waiting for
// one.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	ds, _, err := driver.FromChannel(ctx, s.ready, max, func(d *delivery) driver.Delivery {
		s.mu.Lock()
		s.unsettled[d] = struct{}{}
		s.mu.Unlock()
		return d
	})
	return ds, err
}

// Close stops intake, gives the deliveries in hand back (those handed out
// come again counted as a further attempt, those never handed out as the
// same one), stores the offsets, lets the queues go and leaves the group.
func (s *subscription) Close(ctx context.Context, unhanded, _ []driver.Delivery) error {
	close(s.closing)
	// Stop the pulls and the rebalancing first, so that no queue is
	// taken while the subscription closes.
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	states := make([]*queueState, 0, len(s.states))
	for _, qs := range s.states {
		states = append(states, qs)
	}
	s.states = map[queueKey]*queueState{}
	held := make([]*delivery, 0, len(s.unsettled))
	for d := range s.unsettled {
		held = append(held, d)
	}
	s.mu.Unlock()
	fresh := make(map[*delivery]bool, len(unhanded))
	for _, d := range unhanded {
		fresh[d.(*delivery)] = true
	}
	ctx, cancel := context.WithTimeout(ctx, s.b.opts.RequestTimeout)
	defer cancel()
	for _, d := range held {
		attempt := d.msg.Attempt + 1
		if fresh[d] {
			attempt = d.msg.Attempt
		}
		if err := d.requeue(ctx, attempt, 0); err != nil {
			// The message stays unsettled, so its offset is not
			// committed: the group reads it again.
			s.log("giving back a delivery failed", "id", d.msg.ID, "err", err)
			continue
		}
		d.settle()
	}
	for _, qs := range states {
		s.commit(ctx, qs)
	}
	s.unlockAll(ctx)
	s.unregister(ctx)
	s.conns.close()
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	return nil
}

// unlockAll gives up the group's locks this member may hold on the queues
// of its topics (a lock of another member is left alone by the broker).
func (s *subscription) unlockAll(ctx context.Context) {
	byAddr := map[string][]mqJSON{}
	for _, t := range s.topics() {
		s.b.mu.Lock()
		rt := s.b.routes[t]
		s.b.mu.Unlock()
		if rt == nil {
			continue
		}
		for _, q := range rt.read {
			byAddr[q.addr] = append(byAddr[q.addr], mqOf(queueKey{t, q}))
		}
	}
	for addr, set := range byAddr {
		c, err := s.conns.get(ctx, addr)
		if err != nil {
			continue
		}
		body, _ := json.Marshal(map[string]any{"consumerGroup": s.rgroup, "clientId": s.clientID, "mqSet": set})
		if _, err := c.callOK(ctx, codeUnlockBatchMQ, nil, body); err != nil && ctx.Err() == nil {
			s.log("queue unlock failed", "broker", addr, "err", err)
		}
	}
}

func (s *subscription) unregister(ctx context.Context) {
	nodes, err := s.b.clusterNodes(ctx, false)
	if err != nil {
		return
	}
	for _, addr := range nodes {
		c, err := s.conns.get(ctx, addr)
		if err != nil {
			continue
		}
		c.callOK(ctx, codeUnregisterClient, map[string]string{"clientID": s.clientID, "consumerGroup": s.rgroup, "producerGroup": ""}, nil)
	}
}

// delivery is one message taken by Receive.
type delivery struct {
	s      *subscription
	qs     *queueState
	offset int64
	msg    *bus.Message
}

func (d *delivery) Message() *bus.Message { return d.msg }

// settle records the settlement: the offset may be committed.
func (d *delivery) settle() {
	held := d.s.drop(d)
	d.qs.mu.Lock()
	delete(d.qs.pending, d.offset)
	if held {
		d.qs.handed--
	}
	d.qs.mu.Unlock()
}

// drop forgets an unsettled delivery and reports whether it was one, so
// that of two who let it go only one counts it off.
func (s *subscription) drop(d *delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, held := s.unsettled[d]
	delete(s.unsettled, d)
	return held
}

func (d *delivery) Ack(ctx context.Context) error {
	d.settle()
	return nil
}

// Retry sends a copy of the message to the group's retry topic, due after
// delay, then settles the delivery.
func (d *delivery) Retry(ctx context.Context, delay time.Duration, attempts int) error {
	return d.after(attempts+1, d.requeue(ctx, attempts+1, delay))
}

// DeadLetter stores dead in the dead-letter topic, then settles the
// delivery.
func (d *delivery) DeadLetter(ctx context.Context, topic string, dead *bus.Message) error {
	props, err := encodeProperties(dead)
	if err == nil {
		var o outgoing
		if o, err = d.s.b.outgoing(0, dead.Key, dead.Body, props); err == nil {
			err = d.s.b.send(ctx, Name(topic, maxTopicLen), []outgoing{o})
		}
	}
	return d.after(d.msg.Attempt, err)
}

// after settles the delivery once the copy that replaces it is stored.
// When that failed, the message stays pending, so its offset is not
// committed, and comes again from this subscription after a pause,
// numbered attempt.
func (d *delivery) after(attempt int, err error) error {
	if err == nil {
		d.settle()
		return nil
	}
	s := d.s
	again := &delivery{s: s, qs: d.qs, offset: d.offset, msg: d.msg.Clone()}
	again.msg.Attempt = attempt
	s.mu.Lock()
	delete(s.unsettled, d)
	s.unsettled[again] = struct{}{}
	s.mu.Unlock()
	// The copy stays counted as handed while it waits, so that a release
	// of its queue waits for it too. Once the queue is no longer pulled
	// here (released, or the subscription closing), the copy is dropped:
	// the offset is still pending, so whoever pulls the queue next reads
	// the message again.
	qs := d.qs
	go func() {
		select {
		case <-time.After(redeliverPause):
			if !s.drop(again) {
				return // Close gave it back
			}
			select {
			case s.ready <- again:
				return
			case <-qs.done:
			}
		case <-qs.done:
			if !s.drop(again) {
				return
			}
		}
		qs.mu.Lock()
		qs.handed--
		qs.mu.Unlock()
	}()
	return err
}

// redeliverPause is how long a delivery whose settlement failed waits
// before it comes again.
const redeliverPause = time.Second

// requeue stores a copy of the message in the group's retry topic, with
// the given attempt number, due after delay (a broker timer message).
func (d *delivery) requeue(ctx context.Context, attempt int, delay time.Duration) error {
	extra := []string{PropAttempt, strconv.Itoa(attempt)}
	if delay > 0 {
		extra = append(extra, propTimerMs, itoa(time.Now().Add(delay).UnixMilli()))
	}
	props, err := encodeProperties(d.msg, extra...)
	if err != nil {
		return err
	}
	o, err := d.s.b.outgoing(0, d.msg.Key, d.msg.Body, props)
	if err != nil {
		return err
	}
	return d.s.b.send(ctx, d.s.retryTopic, []outgoing{o})
}

var _ driver.Subscription = (*subscription)(nil)
var _ driver.Delivery = (*delivery)(nil)
