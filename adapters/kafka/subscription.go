package kafka

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	kgo "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/offsetcommit"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// A subscription is one member of a Kafka consumer group. It consumes the
// topic and, unless Options.BlockingRetry is set, the group's retry topic.
//
// Group membership is kafka-go's ConsumerGroup: each generation lists the
// partitions this member owns. Every owned partition has a franz-go client
// reading it, whose records become deliveries; Receive takes them from
// any partition and so out of order across partitions. A partition's
// offset is committed up to its first unsettled record only, so a crash or
// rebalance redelivers everything not yet settled and never skips a
// record.
type subscription struct {
	c          *conn
	topic      string
	retryTopic string // empty with BlockingRetry
	groupID    string
	opts       bus.SubscribeOptions
	log        *slog.Logger

	ready  chan *delivery // deliveries on their way from partitions to Receive
	errs   chan error     // the latest lasting failure, for Receive
	fatal  chan error     // a failure that ends the subscription before it joined
	joined chan struct{}  // closed when the first generation has started
	done   chan struct{}  // closed by Close

	ctx    context.Context // ends background work at Close
	cancel context.CancelFunc
	bg     sync.WaitGroup // the group loop and reader shutdowns

	closeOnce sync.Once
	closeErr  error
	joinOnce  sync.Once

	mu         sync.Mutex
	closed     bool
	err        error  // fatal failure: Receive returns it from then on
	lastErr    error  // latest failure before the first join
	lastLogged string // report's last logged failure, and when
	loggedAt   time.Time
}

func newSubscription(c *conn, topic string, opts bus.SubscribeOptions) *subscription {
	ctx, cancel := context.WithCancel(c.ctx)
	s := &subscription{
		c:       c,
		topic:   topic,
		groupID: c.opts.GroupID(topic, opts.Group),
		opts:    opts,
		log:     c.opts.Logger.With("topic", topic, "group", opts.Group),
		ready:   make(chan *delivery),
		errs:    make(chan error, 1),
		fatal:   make(chan error, 1),
		joined:  make(chan struct{}),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
	if !c.opts.BlockingRetry {
		s.retryTopic = RetryTopic(topic, opts.Group)
	}
	return s
}

func (s *subscription) start() {
	s.bg.Add(1)
	go s.run()
}

// run creates the topics, then follows the group from generation to
// generation until Close.
func (s *subscription) run() {
	defer s.bg.Done()
	topics, err := s.prepareTopics()
	if err != nil {
		return
	}
	o := s.c.opts
	cg, err := kgo.NewConsumerGroup(kgo.ConsumerGroupConfig{
		ID:                s.groupID,
		Brokers:           o.Brokers,
		Dialer:            s.c.dialer,
		Topics:            topics,
		HeartbeatInterval: o.HeartbeatInterval,
		SessionTimeout:    o.SessionTimeout,
		RebalanceTimeout:  o.RebalanceTimeout,
		JoinGroupBackoff:  o.JoinBackoff,
		// Rebalances when partitions are added, and covers a leader that
		// saw no metadata for a topic created a moment before.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		StartOffset:            kgo.FirstOffset,
		Timeout:                o.WriteTimeout,
		ErrorLogger:            errLogger(o.Logger),
	})
	if err != nil {
		s.fail(fmt.Errorf("kafka: consumer group %q: %w", s.groupID, err))
		return
	}
	defer cg.Close()
	for {
		gen, err := cg.Next(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, kgo.ErrGroupClosed) {
				return
			}
			if s.report(fmt.Errorf("kafka: consumer group %q: %w", s.groupID, err)) {
				return
			}
			continue
		}
		s.startGeneration(gen)
	}
}

// prepareTopics makes sure the topic and the retry topic exist, retrying
// while the failure may pass.
func (s *subscription) prepareTopics() ([]string, error) {
	pause := 100 * time.Millisecond
	for {
		n, err := s.c.ensureTopic(s.ctx, s.topic, 0)
		if err == nil && s.retryTopic != "" {
			// Same partition count, so a key keeps to one partition index.
			_, err = s.c.ensureTopic(s.ctx, s.retryTopic, n)
		}
		if err == nil {
			if s.retryTopic == "" {
				return []string{s.topic}, nil
			}
			return []string{s.topic, s.retryTopic}, nil
		}
		if s.ctx.Err() != nil {
			return nil, err
		}
		if s.report(err) {
			return nil, err
		}
		select {
		case <-time.After(pause):
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// report records a background failure. One that cannot pass (refused
// credentials or permissions, a missing topic) ends a subscription that
// has not joined yet, and report returns true; after the join Receive
// returns it. Failures that kafka-go retries by itself are only logged.
func (s *subscription) report(err error) bool {
	err = classify(err)
	s.mu.Lock()
	joined := s.isJoined()
	if !joined {
		s.lastErr = err
	}
	s.mu.Unlock()
	if !joined && !retriable(err) {
		s.fail(err)
		return true
	}
	s.mu.Lock()
	quiet := err.Error() == s.lastLogged && time.Since(s.loggedAt) < 10*time.Second
	if !quiet {
		s.lastLogged, s.loggedAt = err.Error(), time.Now()
	}
	s.mu.Unlock()
	if !quiet {
		// kafka-go retries a failed join every JoinBackoff; one line per
		// distinct failure every 10s is enough.
		s.log.Warn("omnibus/kafka: consumer failure; retrying", "error", err)
	}
	if joined && !retriable(err) {
		select {
		case <-s.errs:
		default:
		}
		select {
		case s.errs <- err:
		default:
		}
	}
	return false
}

func (s *subscription) fail(err error) {
	err = classify(err)
	s.log.Error("omnibus/kafka: subscription failed", "error", err)
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	select {
	case s.fatal <- err:
	default:
	}
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
	if errors.Is(err, ErrNoTopic) || isAuthError(err) || isForbidden(err) {
		return false
	}
	var ke kgo.Error
	if errors.As(err, &ke) {
		switch ke {
		case kgo.RebalanceInProgress, kgo.IllegalGeneration, kgo.UnknownMemberId, kgo.TopicAlreadyExists:
			return true
		}
		return ke.Temporary()
	}
	return true
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// Receive takes up to max deliveries from the partitions, waiting for
// one. A lasting failure of the group (refused permissions, a missing
// topic) is returned as driver.Lasting.
func (s *subscription) Receive(ctx context.Context, max int) ([]driver.Delivery, error) {
	if err := s.failure(); err != nil {
		return nil, driver.Lasting(err)
	}
	var out []driver.Delivery
	select {
	case d := <-s.ready:
		out = append(out, d)
	case err := <-s.errs:
		return nil, driver.Lasting(err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(out) < max {
		select {
		case d := <-s.ready:
			out = append(out, d)
		default:
			return out, nil
		}
	}
	return out, nil
}

func (s *subscription) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close leaves the group. Unsettled deliveries are not committed, so the
// partitions' next owners receive them again; their metadata in the final
// commit tells the next owner that they were delivered once already, so
// that their Attempt counts on. Deliveries never handed out were not
// counted as delivered.
//
// Leaving takes a last commit and the group's LeaveGroup; when ctx ends
// first, Close returns ctx's error and they finish in the background.
func (s *subscription) Close(ctx context.Context, _, _ []driver.Delivery) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.mu.Unlock()
		// Settlements have finished; a redelivery scheduled after a
		// failed one ends with ctx.
		s.cancel()
		left := make(chan struct{})
		go func() {
			s.bg.Wait()
			s.c.forget(s)
			close(left)
		}()
		select {
		case <-left:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("kafka: leaving group %q: %w", s.groupID, ctx.Err())
		}
	})
	return s.closeErr
}

// generation is this member's share of one consumer group generation.
type generation struct {
	s       *subscription
	kg      *kgo.Generation
	parts   []*partition
	settled chan struct{} // signalled when a delivery of the generation settles
}

// startGeneration reads the committed offsets of the assigned partitions
// and starts consuming them.
func (s *subscription) startGeneration(kg *kgo.Generation) {
	g := &generation{s: s, kg: kg, settled: make(chan struct{}, 1)}
	want := map[string][]int{}
	for topic, as := range kg.Assignments {
		for _, a := range as {
			want[topic] = append(want[topic], a.ID)
		}
	}
	committed := s.committed(want)
	for topic, as := range kg.Assignments {
		for _, a := range as {
			p := &partition{
				g:         g,
				topic:     topic,
				id:        a.ID,
				retry:     topic == s.retryTopic,
				start:     a.Offset,
				next:      -1,
				out:       map[*delivery]struct{}{},
				wake:      make(chan struct{}, 1),
				delivered: -1,
			}
			if s.c.opts.BlockingRetry {
				p.keys = map[string]*keyLine{}
			}
			p.last = commitPoint{offset: -1}
			if c, ok := committed[topic][a.ID]; ok && c.CommittedOffset >= 0 {
				p.start = c.CommittedOffset
				p.last = commitPoint{offset: c.CommittedOffset, meta: c.Metadata}
				p.restore(c.Metadata)
			}
			if p.start < 0 {
				p.start = kgo.FirstOffset
			}
			g.parts = append(g.parts, p)
		}
	}
	kg.Start(g.run)
	s.joinOnce.Do(func() { close(s.joined) })
}

// committed fetches the committed offsets and their metadata. On failure
// the generation's own offsets serve, without attempt history.
func (s *subscription) committed(want map[string][]int) map[string]map[int]kgo.OffsetFetchPartition {
	out := map[string]map[int]kgo.OffsetFetchPartition{}
	if len(want) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.c.opts.WriteTimeout)
	defer cancel()
	res, err := s.c.admin.OffsetFetch(ctx, &kgo.OffsetFetchRequest{GroupID: s.groupID, Topics: want})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		s.log.Warn("omnibus/kafka: fetching committed offsets failed; attempt counts restart", "error", err)
		return out
	}
	for topic, ps := range res.Topics {
		out[topic] = map[int]kgo.OffsetFetchPartition{}
		for _, p := range ps {
			if p.Error == nil {
				out[topic][p.Partition] = p
			}
		}
	}
	return out
}

// run consumes the generation's partitions and commits their progress
// until the generation ends (a rebalance, a lost session, or Close). Then
// it stops the partitions, waits up to DrainTimeout for in-flight
// deliveries to be settled (not on Close), gives back the rest, and makes
// a last commit while the generation is still valid.
func (g *generation) run(ctx context.Context) {
	s := g.s
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range g.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(pctx)
		}()
	}
	tick := time.NewTicker(s.c.opts.CommitInterval)
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-tick.C:
			g.commit()
		}
	}
	tick.Stop()
	stop()
	wg.Wait()
	g.drain()
	g.revoke()
	g.commit()
}

// drain waits until the generation has no unsettled deliveries, for at
// most DrainTimeout, and not at all once the subscription is closing.
func (g *generation) drain() {
	s := g.s
	timer := time.NewTimer(s.c.opts.DrainTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		n := 0
		for _, p := range g.parts {
			n += len(p.out)
		}
		closed := s.closed
		s.mu.Unlock()
		if n == 0 || closed {
			return
		}
		select {
		case <-g.settled:
		case <-timer.C:
			s.log.Info("omnibus/kafka: rebalance gives back unsettled deliveries", "count", n)
			return
		case <-s.done:
			return
		}
	}
}

// revoke ends the generation's hold on its partitions: deliveries still
// out can no longer be settled, and those waiting to be handed out are
// dropped (see HandOff).
func (g *generation) revoke() {
	s := g.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range g.parts {
		p.revoked = true
		for d := range p.out {
			if d.state == stateOut {
				d.state = stateRevoked
				delete(p.out, d)
			}
		}
	}
}

// commit commits each partition's progress that changed since its last
// commit. A commit refused because the generation is over is dropped: the
// partition's next owner starts from the last accepted commit.
//
// The request is built here rather than with kafka-go's Client.OffsetCommit,
// which sends a committed leader epoch of 0 instead of -1 (unknown): Java
// consumers validating such an offset after a leader change would take it
// for log truncation.
func (g *generation) commit() {
	s := g.s
	var topics []offsetcommit.RequestTopic
	index := map[string]int{}
	sent := map[*partition]commitPoint{}
	s.mu.Lock()
	for _, p := range g.parts {
		cp, ok := p.commitPoint()
		if !ok || cp == p.last {
			continue
		}
		i, ok := index[p.topic]
		if !ok {
			i = len(topics)
			index[p.topic] = i
			topics = append(topics, offsetcommit.RequestTopic{Name: p.topic})
		}
		topics[i].Partitions = append(topics[i].Partitions, offsetcommit.RequestPartition{
			PartitionIndex:       int32(p.id),
			CommittedOffset:      cp.offset,
			CommittedLeaderEpoch: -1,
			CommittedMetadata:    cp.meta,
			CommitTimestamp:      time.Now().UnixMilli(),
		})
		sent[p] = cp
	}
	s.mu.Unlock()
	if len(sent) == 0 {
		return
	}
	// Not s.ctx: the last commit runs after Close has cancelled it.
	ctx, cancel := context.WithTimeout(context.Background(), s.c.opts.WriteTimeout)
	defer cancel()
	m, err := s.c.tr.RoundTrip(ctx, s.c.addr, &offsetcommit.Request{
		GroupID:      s.groupID,
		GenerationID: g.kg.ID,
		MemberID:     g.kg.MemberID,
		// Only versions 2 to 4 carry it; -1 keeps the broker's retention.
		RetentionTimeMs: -1,
		Topics:          topics,
	})
	res, ok := m.(*offsetcommit.Response)
	if err == nil && !ok {
		err = fmt.Errorf("unexpected response %T", m)
	}
	if err != nil {
		s.log.Warn("omnibus/kafka: offset commit failed", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range g.parts {
		cp, ok := sent[p]
		if !ok {
			continue
		}
		var perr error = errors.New("no answer for the partition")
		for _, t := range res.Topics {
			for _, r := range t.Partitions {
				if t.Name == p.topic && int(r.PartitionIndex) == p.id {
					perr = nil
					if r.ErrorCode != 0 {
						perr = kgo.Error(r.ErrorCode)
					}
				}
			}
		}
		switch {
		case perr == nil:
			p.last = cp
		case errors.Is(perr, kgo.IllegalGeneration), errors.Is(perr, kgo.UnknownMemberId), errors.Is(perr, kgo.RebalanceInProgress):
			s.log.Debug("omnibus/kafka: commit refused: the generation is over", "partition", p.id, "error", perr)
		default:
			s.log.Warn("omnibus/kafka: offset commit failed", "partition", p.id, "error", perr)
		}
	}
}

// partition is one assigned partition of one generation. Its fields are
// guarded by subscription.mu unless noted.
type partition struct {
	g     *generation
	topic string
	id    int
	retry bool // a retry-topic partition: records wait until due

	// Set before the partition starts, read-only after.
	start    int64 // first offset to read: committed, or kgo.FirstOffset
	prevOut  int64 // from the commit metadata: offsets below were delivered before
	prevHead int   // from the commit metadata: deliveries of the record at start

	entries   []*entry               // fetched records not yet committed, in offset order
	next      int64                  // offset after the last fetched record; -1 before any
	delivered int64                  // offset after the last record handed out; -1 before any
	held      heldQueue              // records free to be handed out (once due)
	keys      map[string]*keyLine    // BlockingRetry: keys with an unsettled record
	queued    int                    // BlockingRetry: records waiting in keys
	out       map[*delivery]struct{} // handed out and unsettled
	revoked   bool
	last      commitPoint // last accepted commit

	wake chan struct{} // the partition's loop has something new to look at
}

// keyLine holds, with BlockingRetry, the records of a key that wait for
// an earlier record of the key to be settled.
type keyLine struct {
	queue []*delivery
}

// admit makes a fetched record available. With BlockingRetry a keyed
// record waits while an earlier record of its key is unsettled.
func (p *partition) admit(d *delivery) {
	if p.keys != nil && len(d.rec.Key) > 0 {
		k := string(d.rec.Key)
		if kl := p.keys[k]; kl != nil {
			kl.queue = append(kl.queue, d)
			p.queued++
			return
		}
		p.keys[k] = &keyLine{}
	}
	heap.Push(&p.held, d)
}

// advance frees, with BlockingRetry, the next record of a settled
// record's key.
func (p *partition) advance(d *delivery) {
	if p.keys == nil || len(d.rec.Key) == 0 {
		return
	}
	k := string(d.rec.Key)
	kl := p.keys[k]
	if kl == nil {
		return
	}
	if len(kl.queue) == 0 {
		delete(p.keys, k)
		return
	}
	next := kl.queue[0]
	kl.queue[0] = nil
	kl.queue = kl.queue[1:]
	p.queued--
	heap.Push(&p.held, next)
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

// run reads the partition and hands its records to Receive in order (a
// retry partition: in order of due time) until ctx ends.
func (p *partition) run(ctx context.Context) {
	s := p.g.s
	o := s.c.opts
	// A topic partition without BlockingRetry hands its records out in
	// offset order as they come: the pump passes them straight to Receive.
	// Otherwise they go through the loop below, which holds them back.
	direct := !p.retry && p.keys == nil
	fetched := make(chan *delivery)
	if direct {
		fetched = s.ready
	}
	pumped := make(chan struct{})
	r, err := franz.NewClient(s.c.fetchOptions(p.topic, p.id, p.start)...)
	if err != nil {
		s.log.Error("omnibus/kafka: cannot start reading", "partition", p.id, "error", err)
		close(pumped)
	} else {
		go p.pump(ctx, r, fetched, pumped)
	}
	defer func() {
		<-pumped
		if r == nil {
			return
		}
		// Closing waits for the fetch in flight; the next generation
		// need not.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			r.Close()
		}()
	}()
	if direct {
		<-ctx.Done()
		return
	}

	// Read ahead to find what may go while earlier records wait.
	lookahead := o.RetryLookahead
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		s.mu.Lock()
		room := p.held.Len()+p.queued < lookahead
		var head *delivery
		if p.held.Len() > 0 {
			head = p.held.items[0]
		}
		s.mu.Unlock()

		var in <-chan *delivery
		if room {
			in = fetched
		}
		var out chan<- *delivery
		var due <-chan time.Time
		if head != nil {
			if wait := time.Until(head.due); wait > 0 {
				timer.Reset(wait)
				due = timer.C
			} else {
				out = s.ready
			}
		}
		select {
		case d := <-in:
			s.mu.Lock()
			p.admit(d)
			s.mu.Unlock()
		case out <- head:
			s.mu.Lock()
			heap.Remove(&p.held, head.index)
			s.mu.Unlock()
		case <-due:
		case <-p.wake:
		case <-ctx.Done():
			return
		}
	}
}

// pump fetches records, tracks them, and passes them to the partition's
// loop. franz-go retries failed fetches by itself; what it reports is
// logged here.
func (p *partition) pump(ctx context.Context, r *franz.Client, out chan<- *delivery, done chan<- struct{}) {
	defer close(done)
	s := p.g.s
	pause := 100 * time.Millisecond
	for {
		fs := r.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var failed error
		fs.EachError(func(_ string, _ int32, err error) {
			if failed == nil {
				failed = err
			}
		})
		if failed != nil && fs.NumRecords() == 0 {
			s.log.Warn("omnibus/kafka: fetch failed; retrying", "partition", p.id, "error", failed)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			pause = min(2*pause, 5*time.Second)
			continue
		}
		pause = 100 * time.Millisecond
		for it := fs.RecordIter(); !it.Done(); {
			d := p.track(fetchedMessage(it.Next()))
			select {
			case out <- d:
			case <-ctx.Done():
				return
			}
		}
	}
}

// fetchedMessage is a fetched record in the form deliveries keep.
func fetchedMessage(r *franz.Record) kgo.Message {
	var h []kgo.Header
	if len(r.Headers) > 0 {
		h = make([]kgo.Header, len(r.Headers))
		for i, x := range r.Headers {
			h[i] = kgo.Header{Key: x.Key, Value: x.Value}
		}
	}
	return kgo.Message{Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset,
		Key: r.Key, Value: r.Value, Headers: h, Time: r.Timestamp}
}

// track records a fetched record in the partition and makes its delivery.
func (p *partition) track(rec kgo.Message) *delivery {
	s := p.g.s
	m, attempt, due := decode(rec)
	if !p.retry {
		attempt, due = 1, time.Time{}
	} else if attempt < 1 {
		attempt = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &entry{offset: rec.Offset, deliveries: p.priorDeliveries(rec.Offset)}
	m.Attempt = attempt + e.deliveries
	p.entries = append(p.entries, e)
	p.next = rec.Offset + 1
	return &delivery{s: s, p: p, e: e, rec: rec, msg: m, due: due, index: -1, state: stateHeld}
}

func (p *partition) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// heldQueue orders the deliveries a partition may hand out by due time,
// then offset. Records of a topic are due at once, so they go in offset
// order; with BlockingRetry a key has one record here at a time, so a
// record waiting for its retry delay holds back none of another key.
type heldQueue struct {
	items []*delivery
}

func (q *heldQueue) Len() int { return len(q.items) }
func (q *heldQueue) Less(i, j int) bool {
	a, b := q.items[i], q.items[j]
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
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
