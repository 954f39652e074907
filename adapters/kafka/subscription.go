package kafka

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	franz "github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// A subscription is one member of a Kafka consumer group. It consumes the
// topic and, unless Options.BlockingRetry is set, the group's retry topic,
// with one franz-go client: the client joins the group (cooperative-sticky
// by default), fetches the partitions it is assigned, and commits what the
// subscription tells it to. Receive polls it for as many records as the
// window has room for, from any partition and so out of order across
// partitions. A partition's offset is committed up to its first unsettled
// record only, so a crash or rebalance redelivers everything not yet
// settled and never skips a record.
type subscription struct {
	c          *conn
	cl         *franz.Client
	topic      string
	retryTopic string // empty with BlockingRetry
	groupID    string
	opts       bus.SubscribeOptions
	log        *slog.Logger

	joined chan struct{} // closed at the first assignment
	fatal  chan error    // a failure that ends the subscription before it joined
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup // the commit loop and redeliveries

	mu         sync.Mutex
	closed     bool
	parts      map[topicPartition]*partition
	held       heldQueue // records waiting to be due, behind their key, or to come again
	settled    chan struct{}
	wake       context.CancelFunc // cuts a Receive's poll short
	err        error              // lasting failure, for Receive
	lastErr    error              // latest failure before the first join
	lastLogged string
	loggedAt   time.Time
	joinOnce   sync.Once
	closeOnce  sync.Once
	closeErr   error
}

type topicPartition struct {
	topic string
	id    int32
}

func newSubscription(c *conn, topic string, opts bus.SubscribeOptions) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{
		c:       c,
		topic:   topic,
		groupID: c.opts.GroupID(topic, opts.Group),
		opts:    opts,
		log:     c.opts.Logger.With("topic", topic, "group", opts.Group),
		joined:  make(chan struct{}),
		fatal:   make(chan error, 1),
		ctx:     ctx,
		cancel:  cancel,
		parts:   map[topicPartition]*partition{},
		settled: make(chan struct{}, 1),
	}
	if !c.opts.BlockingRetry {
		s.retryTopic = RetryTopic(topic, opts.Group)
	}
	return s
}

// consumerOptions configure the subscription's franz-go client.
func (s *subscription) consumerOptions() []franz.Opt {
	o := s.c.opts
	topics := []string{s.topic}
	if s.retryTopic != "" {
		topics = append(topics, s.retryTopic)
	}
	balancer := franz.CooperativeStickyBalancer()
	if o.Rebalance == RebalanceEager {
		balancer = franz.RangeBalancer()
	}
	limit := int32(min(2*(o.MaxMessageSize+headroom), 1<<30))
	opts := append(s.c.connOptions(),
		franz.ConsumerGroup(s.groupID),
		franz.ConsumeTopics(topics...),
		franz.Balancers(balancer),
		franz.DisableAutoCommit(),
		franz.SessionTimeout(o.SessionTimeout),
		franz.HeartbeatInterval(o.HeartbeatInterval),
		franz.RebalanceTimeout(o.RebalanceTimeout),
		// A group new to a topic, or an offset gone by retention,
		// starts at the earliest offset.
		franz.ConsumeResetOffset(franz.NewOffset().AtStart()),
		franz.FetchIsolationLevel(franz.ReadCommitted()),
		franz.FetchMaxWait(o.FetchMaxWait),
		franz.FetchMaxBytes(limit),
		franz.FetchMaxPartitionBytes(limit),
		franz.OnPartitionsAssigned(s.assigned),
		franz.OnOffsetsFetched(s.offsetsFetched),
		franz.OnPartitionsRevoked(s.revoked),
		franz.OnPartitionsLost(s.lost),
		franz.WithHooks(groupErrors{s}),
	)
	if o.InstanceID != "" {
		opts = append(opts, franz.InstanceID(instanceID(o.InstanceID, s.groupID)))
	}
	return opts
}

// instanceID is the group.instance.id of a static member of group: the
// Client's InstanceID and a digest of the group, since one Client may be
// a member of several groups and the ID allows only a few characters.
func instanceID(id, group string) string {
	sum := sha256.Sum256([]byte(group))
	return id + "-" + hex.EncodeToString(sum[:8])
}

// start creates the topics and the consumer client, which joins the
// group in the background.
func (s *subscription) start(ctx context.Context) error {
	if err := s.prepareTopics(ctx); err != nil {
		return err
	}
	cl, err := franz.NewClient(s.consumerOptions()...)
	if err != nil {
		return &bus.ConfigError{Problems: []error{fmt.Errorf("consumer: %w", err)}}
	}
	s.cl = cl
	s.bg.Add(1)
	go s.commitLoop()
	return nil
}

// prepareTopics makes sure the topic and the retry topic exist, the retry
// topic with at least the topic's partition count, so that a key keeps
// its partition index.
func (s *subscription) prepareTopics(ctx context.Context) error {
	n, err := s.c.ensureTopic(ctx, s.topic, 0)
	if err == nil && s.retryTopic != "" {
		var rn int
		rn, err = s.c.ensureTopic(ctx, s.retryTopic, n)
		if err == nil && rn < n {
			err = s.c.growTopic(ctx, s.retryTopic, n)
		}
	}
	if err != nil {
		return classify(err)
	}
	return nil
}

// groupErrors passes the errors that end a group session to report.
type groupErrors struct{ s *subscription }

func (g groupErrors) OnGroupManageError(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, franz.ErrClientClosed) {
		return
	}
	g.s.report(fmt.Errorf("kafka: consumer group %q: %w", g.s.groupID, err))
}

// report records a failure of the group. One that cannot pass (refused
// credentials or permissions) ends a subscription that has not joined
// yet; after the join, Receive returns it. franz-go retries the rest by
// itself; they are logged, one line per distinct failure every 10s.
func (s *subscription) report(err error) {
	err = classify(err)
	s.mu.Lock()
	joined := s.isJoined()
	if !joined {
		s.lastErr = err
	}
	lasting := !retriable(err)
	if joined && lasting {
		s.err = err
	}
	quiet := err.Error() == s.lastLogged && time.Since(s.loggedAt) < 10*time.Second
	if !quiet {
		s.lastLogged, s.loggedAt = err.Error(), time.Now()
	}
	s.mu.Unlock()
	if !joined && lasting {
		select {
		case s.fatal <- err:
		default:
		}
		return
	}
	if !quiet {
		s.log.Warn("omnibus/kafka: consumer failure; retrying", "error", err)
	}
	s.poke()
}

func (s *subscription) isJoined() bool {
	select {
	case <-s.joined:
		return true
	default:
		return false
	}
}

// joinError is what Subscribe returns when its context ends before the
// first join and something went wrong meanwhile.
func (s *subscription) joinError(ctxErr error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		return nil
	}
	if isNetError(s.lastErr) {
		return fmt.Errorf("%w: joining group %q: %w (last failure: %v)", bus.ErrUnreachable, s.groupID, ctxErr, s.lastErr)
	}
	return fmt.Errorf("kafka: joining group %q: %w (last failure: %w)", s.groupID, ctxErr, s.lastErr)
}

// retriable reports failures that may pass by themselves.
func retriable(err error) bool {
	return !errors.Is(err, ErrNoTopic) && !isAuthError(err) && !isForbidden(err) &&
		!errors.Is(err, kerr.GroupMaxSizeReached) && !errors.Is(err, kerr.InvalidSessionTimeout)
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// assigned starts tracking the partitions the group gave this member.
func (s *subscription) assigned(_ context.Context, _ *franz.Client, assigned map[string][]int32) {
	s.mu.Lock()
	for topic, ids := range assigned {
		for _, id := range ids {
			tp := topicPartition{topic, id}
			p := &partition{topic: topic, id: id, retry: topic == s.retryTopic, start: -1, next: -1, delivered: -1,
				out: map[*delivery]struct{}{}, last: commitPoint{offset: -1}}
			if s.c.opts.BlockingRetry {
				p.keys = map[string]*keyLine{}
			}
			s.parts[tp] = p
		}
	}
	s.mu.Unlock()
	s.joinOnce.Do(func() { close(s.joined) })
}

// offsetsFetched reads, from the group's committed offsets, where each
// newly assigned partition starts and the attempt history in the commit
// metadata, so that redeliveries keep counting.
func (s *subscription) offsetsFetched(_ context.Context, _ *franz.Client, res *kmsg.OffsetFetchResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	found := func(topic string, id int32, offset int64, metadata *string, code int16) {
		p := s.parts[topicPartition{topic, id}]
		if p == nil || code != 0 || offset < 0 {
			return
		}
		p.start = offset
		meta := ""
		if metadata != nil {
			meta = *metadata
		}
		p.last = commitPoint{offset: offset, meta: meta}
		p.restore(meta)
	}
	for _, t := range res.Topics {
		for _, r := range t.Partitions {
			found(t.Topic, r.Partition, r.Offset, r.Metadata, r.ErrorCode)
		}
	}
	for _, g := range res.Groups {
		for _, t := range g.Topics {
			for _, r := range t.Partitions {
				found(t.Topic, r.Partition, r.Offset, r.Metadata, r.ErrorCode)
			}
		}
	}
	return nil
}

// revoked ends this member's hold on partitions the group moves away: it
// stops handing out their records, waits up to DrainTimeout for those in
// flight to be settled (not once the subscription is closing), commits
// what was settled, and only then lets the rebalance go on. Deliveries
// still unsettled can no longer be settled (ErrRevoked); the partitions'
// next owners receive them again.
func (s *subscription) revoked(ctx context.Context, _ *franz.Client, revoked map[string][]int32) {
	tps := s.partitionsOf(revoked)
	if len(tps) == 0 {
		return
	}
	s.mu.Lock()
	for _, p := range tps {
		p.draining = true
	}
	s.mu.Unlock()
	s.drain(tps)
	s.mu.Lock()
	for _, p := range tps {
		s.revoke(p)
	}
	s.mu.Unlock()
	s.commit(ctx, tps)
	s.mu.Lock()
	for _, p := range tps {
		delete(s.parts, topicPartition{p.topic, p.id})
	}
	s.mu.Unlock()
}

// lost drops partitions the member lost without a rebalance (its session
// expired): their deliveries fail with ErrRevoked at once, and nothing is
// committed, since the group has moved on.
func (s *subscription) lost(_ context.Context, _ *franz.Client, lost map[string][]int32) {
	tps := s.partitionsOf(lost)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range tps {
		s.revoke(p)
		delete(s.parts, topicPartition{p.topic, p.id})
	}
	if len(tps) > 0 {
		s.log.Warn("omnibus/kafka: partitions lost; their deliveries come again elsewhere", "partitions", len(tps))
	}
}

func (s *subscription) partitionsOf(m map[string][]int32) []*partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*partition
	for topic, ids := range m {
		for _, id := range ids {
			if p := s.parts[topicPartition{topic, id}]; p != nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// drain waits until the partitions have no unsettled deliveries, for at
// most DrainTimeout, and not at all once the subscription is closing.
func (s *subscription) drain(tps []*partition) {
	timer := time.NewTimer(s.c.opts.DrainTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		n := 0
		for _, p := range tps {
			n += len(p.out)
		}
		closed := s.closed
		s.mu.Unlock()
		if n == 0 || closed {
			return
		}
		select {
		case <-s.settled:
		case <-timer.C:
			s.log.Info("omnibus/kafka: rebalance gives back unsettled deliveries", "count", n)
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// revoke marks p gone: its deliveries out can no longer be settled, and
// those waiting in the subscription are dropped. Callers hold s.mu.
func (s *subscription) revoke(p *partition) {
	p.revoked = true
	for d := range p.out {
		if d.state == stateOut {
			d.state = stateRevoked
			delete(p.out, d)
		}
	}
	kept := s.held.items[:0]
	for _, d := range s.held.items {
		if d.p != p {
			kept = append(kept, d)
		}
	}
	clear(s.held.items[len(kept):])
	s.held.items = kept
	heap.Init(&s.held)
	p.queued, p.waiting = 0, 0
	if p.paused {
		// Paused partitions stay paused in the client, should the
		// partition come back to this member.
		p.paused = false
		s.cl.ResumeFetchPartitions(map[string][]int32{p.topic: {p.id}})
	}
}

// commitLoop commits every CommitInterval until Close.
func (s *subscription) commitLoop() {
	defer s.bg.Done()
	tick := time.NewTicker(s.c.opts.CommitInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
			s.mu.Lock()
			tps := make([]*partition, 0, len(s.parts))
			for _, p := range s.parts {
				tps = append(tps, p)
			}
			s.mu.Unlock()
			s.commit(s.ctx, tps)
		}
	}
}

// commit commits each partition's progress that changed since its last
// commit, with the attempt history in the commit metadata. The client
// adds the member's generation, so the coordinator refuses a commit of a
// generation that is over: the partition's next owner starts from the
// last commit accepted.
func (s *subscription) commit(ctx context.Context, tps []*partition) {
	offsets := map[string]map[int32]franz.EpochOffset{}
	meta := map[topicPartition]string{}
	sent := map[topicPartition]commitPoint{}
	s.mu.Lock()
	for _, p := range tps {
		cp, ok := p.commitPoint()
		if !ok || cp == p.last {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = map[int32]franz.EpochOffset{}
		}
		// Epoch -1: unknown, so that no consumer takes the commit for
		// log truncation after a leader change.
		offsets[p.topic][p.id] = franz.EpochOffset{Epoch: -1, Offset: cp.offset}
		tp := topicPartition{p.topic, p.id}
		meta[tp], sent[tp] = cp.meta, cp
	}
	s.mu.Unlock()
	if len(sent) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.c.opts.WriteTimeout)
	defer cancel()
	cctx = franz.PreCommitFnContext(cctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				if m, ok := meta[topicPartition{t.Topic, t.Partitions[j].Partition}]; ok {
					t.Partitions[j].Metadata = &m
				}
			}
		}
		return nil
	})
	s.cl.CommitOffsetsSync(cctx, offsets, func(_ *franz.Client, _ *kmsg.OffsetCommitRequest, res *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.log.Warn("omnibus/kafka: offset commit failed", "error", err)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range res.Topics {
			for _, r := range t.Partitions {
				tp := topicPartition{t.Topic, r.Partition}
				cp, ok := sent[tp]
				if !ok {
					continue
				}
				perr := kerr.ErrorForCode(r.ErrorCode)
				switch {
				case perr == nil:
					if p := s.parts[tp]; p != nil {
						p.last = cp
					}
				case errors.Is(perr, kerr.IllegalGeneration), errors.Is(perr, kerr.UnknownMemberID), errors.Is(perr, kerr.RebalanceInProgress):
					s.log.Debug("omnibus/kafka: commit refused: the generation is over", "partition", r.Partition, "error", perr)
				default:
					s.log.Warn("omnibus/kafka: offset commit failed", "partition", r.Partition, "error", perr)
				}
			}
		}
	})
}

// poke cuts short a Receive waiting in a poll: a held record may go
// sooner than the poll's deadline.
func (s *subscription) poke() {
	s.mu.Lock()
	wake := s.wake
	s.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// Receive returns up to max deliveries: held records that are due, then
// records the client fetched. It waits in a poll of the
// client until one of these is there. A lasting failure of the group
// (refused permissions) is returned as driver.Lasting.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out, next := s.due(max)
		if len(out) > 0 {
			return out, nil
		}
		s.mu.Lock()
		if err := s.err; err != nil {
			s.err = nil
			s.mu.Unlock()
			return nil, driver.Lasting(err)
		}
		var (
			pctx   context.Context
			cancel context.CancelFunc
		)
		if next.IsZero() {
			pctx, cancel = context.WithCancel(ctx)
		} else {
			pctx, cancel = context.WithDeadline(ctx, next)
		}
		s.wake = cancel
		s.mu.Unlock()
		fs := s.cl.PollRecords(pctx, max)
		s.mu.Lock()
		s.wake = nil
		s.mu.Unlock()
		cancel()
		if fs.IsClientClosed() {
			return nil, bus.ErrClosed
		}
		var failed error
		fs.EachError(func(_ string, _ int32, err error) {
			if failed == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				failed = err
			}
		})
		out = s.accept(fs, max)
		if len(out) > 0 {
			return out, nil
		}
		if failed != nil {
			return nil, classify(fmt.Errorf("kafka: fetch: %w", failed))
		}
	}
}

// due takes up to max held records that are due, and says when the next
// held one is.
func (s *subscription) due(max int) ([]driver.Delivery, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []driver.Delivery
	now := time.Now()
	for s.held.Len() > 0 && len(out) < max {
		d := s.held.items[0]
		if d.due.After(now) {
			break
		}
		heap.Pop(&s.held)
		d.p.waiting--
		s.resume(d.p)
		out = append(out, d)
	}
	var next time.Time
	if s.held.Len() > 0 {
		next = s.held.items[0].due
	}
	return out, next
}

// accept tracks fetched records and returns those that may go at once;
// the others wait in held: retry records until they are due, and with
// BlockingRetry the records behind an unsettled one of their key. A
// partition with RetryLookahead records waiting is paused until some go.
func (s *subscription) accept(fs franz.Fetches, max int) []driver.Delivery {
	var out []driver.Delivery
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	fs.EachRecord(func(r *franz.Record) {
		p := s.parts[topicPartition{r.Topic, r.Partition}]
		if p == nil || p.revoked || p.draining {
			// Fetched just before the partition moved: its next owner
			// reads it from the committed offset.
			return
		}
		d := s.track(p, r)
		switch {
		case !p.admit(d):
			p.queued++
		case d.due.After(now) || len(out) >= max:
			heap.Push(&s.held, d)
			p.waiting++
		default:
			out = append(out, d)
		}
		s.pause(p)
	})
	return out
}

// pause stops fetching p while it has RetryLookahead records waiting;
// resume restarts it. Callers hold s.mu.
func (s *subscription) pause(p *partition) {
	if !p.paused && p.waiting+p.queued >= s.c.opts.RetryLookahead {
		p.paused = true
		s.cl.PauseFetchPartitions(map[string][]int32{p.topic: {p.id}})
	}
}

func (s *subscription) resume(p *partition) {
	if p.paused && p.waiting+p.queued < s.c.opts.RetryLookahead {
		p.paused = false
		s.cl.ResumeFetchPartitions(map[string][]int32{p.topic: {p.id}})
	}
}

// track records a fetched record in its partition and makes its delivery.
// Callers hold s.mu.
func (s *subscription) track(p *partition, r *franz.Record) *delivery {
	m, attempt, due := decode(r)
	if !p.retry {
		attempt, due = 1, time.Time{}
	} else if attempt < 1 {
		attempt = 1
	}
	if p.start < 0 {
		// A partition new to the group: its first record is where it
		// started.
		p.start = r.Offset
	}
	e := &entry{offset: r.Offset, deliveries: p.priorDeliveries(r.Offset)}
	m.Attempt = attempt + e.deliveries
	p.entries = append(p.entries, e)
	p.next = r.Offset + 1
	return &delivery{s: s, p: p, e: e, rec: r, msg: m, due: due, index: -1, state: stateHeld}
}

// Close commits what was settled and leaves the group. Unsettled
// deliveries are not committed, so the partitions' next owners receive
// them again; their metadata in the final commit tells the next owner
// that they were delivered once already, so that their Attempt counts on.
// Deliveries never handed out were not counted as delivered. A static
// member (Options.InstanceID) does not leave: its partitions wait for it
// until SessionTimeout passes. When ctx ends first, Close returns ctx's
// error and the client finishes closing in the background.
func (s *subscription) Close(ctx context.Context, _, _ []driver.Delivery) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		tps := make([]*partition, 0, len(s.parts))
		for _, p := range s.parts {
			tps = append(tps, p)
		}
		s.mu.Unlock()
		s.cancel()
		left := make(chan struct{})
		go func() {
			defer close(left)
			s.bg.Wait()
			if s.cl != nil {
				s.commit(ctx, tps)
				s.cl.Close()
			}
			s.c.forget(s)
		}()
		select {
		case <-left:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("kafka: leaving group %q: %w", s.groupID, ctx.Err())
		}
	})
	return s.closeErr
}

// partition is one assigned partition. Its fields are guarded by
// subscription.mu.
type partition struct {
	topic string
	id    int32
	retry bool // a retry-topic partition: records wait until due

	start    int64 // first offset read: committed, or the first fetched; -1 before
	prevOut  int64 // from the commit metadata: offsets below were delivered before
	prevHead int   // from the commit metadata: deliveries of the record at start

	entries   []*entry               // fetched records not yet committed, in offset order
	next      int64                  // offset after the last fetched record; -1 before any
	delivered int64                  // offset after the last record handed out; -1 before any
	keys      map[string]*keyLine    // BlockingRetry: keys with an unsettled record
	queued    int                    // BlockingRetry: records waiting in keys
	waiting   int                    // records waiting in the subscription's held queue
	out       map[*delivery]struct{} // handed out and unsettled
	paused    bool
	draining  bool // being revoked: no more records go out
	revoked   bool
	last      commitPoint // last accepted commit
}

// keyLine holds, with BlockingRetry, the records of a key that wait for
// an earlier record of the key to be settled.
type keyLine struct {
	queue []*delivery
}

// admit reports whether a fetched record may go; with BlockingRetry a
// keyed record waits while an earlier record of its key is unsettled.
func (p *partition) admit(d *delivery) bool {
	if p.keys == nil || len(d.rec.Key) == 0 {
		return true
	}
	k := string(d.rec.Key)
	if kl := p.keys[k]; kl != nil {
		kl.queue = append(kl.queue, d)
		return false
	}
	p.keys[k] = &keyLine{}
	return true
}

// advance returns, with BlockingRetry, the next record of a settled
// record's key, now free to go.
func (p *partition) advance(d *delivery) *delivery {
	if p.keys == nil || len(d.rec.Key) == 0 {
		return nil
	}
	k := string(d.rec.Key)
	kl := p.keys[k]
	if kl == nil {
		return nil
	}
	if len(kl.queue) == 0 {
		delete(p.keys, k)
		return nil
	}
	next := kl.queue[0]
	kl.queue[0] = nil
	kl.queue = kl.queue[1:]
	p.queued--
	return next
}

// entry is one fetched record's place in its partition.
type entry struct {
	offset     int64
	done       bool // settled: the commit may pass it
	deliveries int  // times handed out, counting earlier owners'
}

type commitPoint struct {
	offset int64
	meta   string
}

// The commit metadata records how far the partition's records were handed
// out, and how often the record at the committed offset was, so that the
// next owner keeps counting attempts instead of starting at 1 again:
// "omnibus1 out=<offset> head=<deliveries>".
const metaPrefix = "omnibus1"

func (p *partition) restore(meta string) {
	f := strings.Fields(meta)
	if len(f) == 0 || f[0] != metaPrefix {
		return
	}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "out":
			p.prevOut = n
			if !p.retry {
				// Carried into later commits until the partition gets past it.
				p.delivered = n
			}
		case "head":
			p.prevHead = int(n)
		}
	}
}

// commitPoint is the offset to commit: that of the first unsettled record,
// or the offset after the last fetched one when all are settled.
func (p *partition) commitPoint() (commitPoint, bool) {
	p.trim()
	cp := commitPoint{offset: p.next}
	if len(p.entries) > 0 {
		head := p.entries[0]
		cp.offset = head.offset
		var b strings.Builder
		b.WriteString(metaPrefix)
		if !p.retry && p.delivered > head.offset+1 {
			fmt.Fprintf(&b, " out=%d", p.delivered)
		}
		if head.deliveries > 0 {
			fmt.Fprintf(&b, " head=%d", head.deliveries)
		}
		cp.meta = b.String()
	}
	return cp, cp.offset >= 0
}

// trim drops the settled records at the front: the commit may pass them.
// Settling calls it, so that a partition keeps track of its unsettled
// stretch only, however long the commit interval.
func (p *partition) trim() {
	i := 0
	for i < len(p.entries) && p.entries[i].done {
		p.entries[i] = nil
		i++
	}
	if i > 0 {
		p.entries = p.entries[i:]
	}
}

// priorDeliveries says how often a record was handed out by earlier
// owners of the partition, as far as the commit metadata tells.
func (p *partition) priorDeliveries(offset int64) int {
	n := 0
	if !p.retry && offset < p.prevOut {
		n = 1
	}
	if offset == p.start && p.prevHead > n {
		n = p.prevHead
	}
	return n
}

// heldQueue orders the records waiting to go by due time, then offset.
type heldQueue struct {
	items []*delivery
}

func (q *heldQueue) Len() int { return len(q.items) }
func (q *heldQueue) Less(i, j int) bool {
	a, b := q.items[i], q.items[j]
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	if a.p != b.p {
		return a.p.id < b.p.id
	}
	return a.e.offset < b.e.offset
}
func (q *heldQueue) Swap(i, j int) {
	q.items[i], q.items[j] = q.items[j], q.items[i]
	q.items[i].index, q.items[j].index = i, j
}
func (q *heldQueue) Push(x any) {
	d := x.(*delivery)
	d.index = len(q.items)
	q.items = append(q.items, d)
}
func (q *heldQueue) Pop() any {
	n := len(q.items) - 1
	d := q.items[n]
	q.items[n] = nil
	q.items = q.items[:n]
	d.index = -1
	return d
}
