package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/omnibus-mq/omnibus/bus"
)

// Group is the consumer group of every run. It is the backends' default
// group, because RabbitMQ's adapter declares that group's queue on
// publish: a run on any other group would leave a full queue behind.
const Group = bus.DefaultGroup

// Timeouts of a run's phases outside the measurement.
var (
	// ReadyTimeout bounds the wait for the consumers to receive a first
	// message before producers start (a Kafka group join takes seconds).
	ReadyTimeout = time.Minute
	// AllReadyTimeout bounds the further wait, once one consumer is
	// ready, for the others: a run whose group is still rebalancing would
	// measure the rebalance. A run that starts without them says so.
	AllReadyTimeout = 5 * time.Second
	// DrainTimeout bounds the wait for consumers to receive what was
	// published, after producers stop.
	DrainTimeout = 30 * time.Second
	// DrainIdle ends the drain early when nothing arrives for this long.
	DrainIdle = 5 * time.Second
)

// Sample is the outcome of one repetition of a workload.
type Sample struct {
	Topic   string    `json:"topic"`
	Started time.Time `json:"started"`
	// Published counts messages whose Publish began inside the measurement
	// window and succeeded; Consumed counts messages received inside it.
	Published   int64   `json:"published"`
	Consumed    int64   `json:"consumed"`
	PublishRate float64 `json:"publish_msgs_per_s"`
	ConsumeRate float64 `json:"consume_msgs_per_s"`
	PublishMBps float64 `json:"publish_mb_per_s"`
	ConsumeMBps float64 `json:"consume_mb_per_s"`
	// TargetRate is the fixed rate asked for (0 in a closed loop).
	TargetRate float64 `json:"target_rate,omitempty"`
	// PublishLatency runs from a message's intended send time (its actual
	// one in a closed loop) to the return of the Publish that carried it.
	PublishLatency Percentiles `json:"publish_latency"`
	// EndToEnd runs from the same time to the message's receipt.
	EndToEnd Percentiles `json:"end_to_end_latency"`
	// EndToEndFromSend, in fixed-rate runs, runs from the actual send
	// instead: the uncorrected figure, which leaves out the time a message
	// waited behind a slow producer. Set beside EndToEnd it shows how much
	// of the latency the schedule added.
	EndToEndFromSend *Percentiles `json:"end_to_end_from_send,omitempty"`
	// SendDelay, in fixed-rate runs, is how late each Publish call began
	// after the intended send time of each message it carried.
	SendDelay *Percentiles `json:"send_delay,omitempty"`
	// Unsent counts messages due inside the window that a fixed-rate
	// producer, running behind, had not sent when the window closed.
	Unsent int64 `json:"unsent,omitempty"`
	// PublishErrors counts failed Publish calls; FailedMessages the
	// messages they carried.
	PublishErrors  int64  `json:"publish_errors,omitempty"`
	FailedMessages int64  `json:"failed_messages,omitempty"`
	ReceiveErrors  int64  `json:"receive_errors,omitempty"`
	AckErrors      int64  `json:"ack_errors,omitempty"`
	FirstError     string `json:"first_error,omitempty"`
	// Undrained counts published messages not received when the drain
	// gave up; Extra counts receipts beyond the published count
	// (redeliveries).
	Undrained int64 `json:"undrained,omitempty"`
	Extra     int64 `json:"extra,omitempty"`
	// ReadyAfter is how long the consumers took to receive their first
	// messages; ConsumersReady is how many had when producers started.
	ReadyAfter     time.Duration `json:"ready_after_ns"`
	ConsumersReady int           `json:"consumers_ready"`

	pubHist, e2eHist, e2eSentHist, delayHist *hdrhistogram.Histogram
}

// Live is a snapshot of a repetition in progress.
type Live struct {
	Phase     string        // "connect", "warm-up", "measure" or "drain"
	Elapsed   time.Duration // since producers started
	Planned   time.Duration // warm-up plus duration
	Published int64         // messages published so far, warm-up included
	Received  int64
	Errors    int64
}

// epoch anchors the timestamps messages carry: monotonic nanoseconds since
// it, immune to wall-clock steps. Producers and consumers share the
// process, so they share the clock.
var epoch = time.Now()

func clock() time.Duration { return time.Since(epoch) }

const (
	kindData   = 0
	kindMarker = 1
	magic      = 0xB5
)

// The header: due time (8 bytes), kind, magic, and how much later than
// due the message was sent, in nanoseconds capped at about 4s (4 bytes),
// so consumers can also tell the latency a late producer added.
func stamp(body []byte, ts, lag time.Duration, kind byte) {
	binary.LittleEndian.PutUint64(body, uint64(ts))
	body[8] = kind
	body[9] = magic
	binary.LittleEndian.PutUint32(body[10:], uint32(min(max(lag, 0), math.MaxUint32)))
}

func unstamp(body []byte) (ts, lag time.Duration, kind byte, ok bool) {
	if len(body) < HeaderSize || body[9] != magic {
		return 0, 0, 0, false
	}
	return time.Duration(binary.LittleEndian.Uint64(body)), time.Duration(binary.LittleEndian.Uint32(body[10:])), body[8], true
}

// run is the state one repetition shares between its goroutines.
type run struct {
	w     Workload
	topic string
	pub   bus.Publisher
	// The window is set once the consumers are ready; consumers read it
	// while running, hence atomics.
	warmEnd, end atomic.Int64
	published    atomic.Int64 // successful messages, warm-up included
	received     atomic.Int64 // data messages received
	errors       atomic.Int64
	subReady     []atomic.Bool // per subscription: a marker arrived
	readyCount   atomic.Int32
	errMu        sync.Mutex
	firstErr     string
	payload      []byte // filler copied after the header
}

func (r *run) fail(err error) {
	r.errors.Add(1)
	r.errMu.Lock()
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
	r.errMu.Unlock()
}

func (r *run) message(ts, lag time.Duration) *bus.Message {
	body := make([]byte, r.w.MessageSize)
	copy(body[HeaderSize:], r.payload)
	stamp(body, ts, lag, kindData)
	return &bus.Message{Body: body}
}

func (r *run) inWindow(t time.Duration) bool {
	return int64(t) >= r.warmEnd.Load() && int64(t) < r.end.Load()
}

// Measure runs one repetition of w: it subscribes w.Consumers times to a
// topic, publishes from w.Producers goroutines through pub for w.Warmup
// plus w.Duration, waits for the consumers to receive what was published,
// and summarises what happened inside the measurement window. The topic
// should be new: messages already in it would distort the counts.
//
// pub and sub may be one broker or two connections to it. observe, when
// not nil, is called about five times a second.
func Measure(ctx context.Context, pub bus.Publisher, sub bus.Subscriber, topic string, w Workload, observe func(Live)) (Sample, error) {
	if err := w.Validate(); err != nil {
		return Sample{}, err
	}
	w = w.WithDefaults()
	r := &run{w: w, topic: topic, pub: pub, subReady: make([]atomic.Bool, w.Consumers)}
	r.warmEnd.Store(int64(time.Duration(1<<62 - 1)))
	r.end.Store(int64(time.Duration(1<<62 - 1)))
	r.payload = make([]byte, w.MessageSize)
	for i := range r.payload {
		r.payload[i] = byte('a' + i%26)
	}
	s := Sample{Topic: topic, TargetRate: w.Rate}
	if observe == nil {
		observe = func(Live) {}
	}
	observe(Live{Phase: "connect", Planned: w.Warmup + w.Duration})

	cctx, stopConsumers := context.WithCancel(ctx)
	var subs []bus.Subscription
	var cwg sync.WaitGroup
	shutdown := sync.OnceFunc(func() {
		stopConsumers()
		for _, sb := range subs {
			sb.Close()
		}
		cwg.Wait()
	})
	defer shutdown()
	for range w.Consumers {
		sb, err := sub.Subscribe(ctx, topic, bus.SubscribeOptions{Group: Group, Prefetch: w.Prefetch, MaxAttempts: -1})
		if err != nil {
			return s, fmt.Errorf("subscribe to %s: %w", topic, err)
		}
		subs = append(subs, sb)
	}
	var consumers []*consumer
	for i, sb := range subs {
		for range w.ConsumerWorkers {
			c := &consumer{r: r, sub: i, e2e: newHist(), e2eSent: newHist()}
			consumers = append(consumers, c)
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				c.loop(cctx, sb)
			}()
		}
	}

	// Producers start once every consumer has received a marker, so a
	// slow group join or rebalance does not eat the measurement. Markers
	// go out in batches, one per waiting receiver, with distinct keys to
	// spread over partitions, until then: a backend may hand consecutive
	// messages to the receivers in the order they began waiting.
	t0 := clock()
	var firstReady time.Duration
	poll := time.NewTicker(50 * time.Millisecond)
	markers := make([]*bus.Message, min(w.Consumers*w.ConsumerWorkers, 256))
	for int(r.readyCount.Load()) < w.Consumers {
		for i := range markers {
			body := make([]byte, HeaderSize)
			stamp(body, clock(), 0, kindMarker)
			markers[i] = &bus.Message{Body: body, Key: "omnibus-bench-marker-" + strconv.Itoa(i)}
		}
		if err := pub.Publish(ctx, topic, markers...); err != nil {
			poll.Stop()
			return s, fmt.Errorf("publish to %s: %w", topic, err)
		}
		select {
		case <-poll.C:
		case <-ctx.Done():
			poll.Stop()
			return s, ctx.Err()
		}
		now := clock()
		if r.readyCount.Load() == 0 {
			if now-t0 > ReadyTimeout {
				poll.Stop()
				return s, fmt.Errorf("consumers of %s received nothing within %v", topic, ReadyTimeout)
			}
			continue
		}
		if firstReady == 0 {
			firstReady = now
		}
		if now-firstReady > AllReadyTimeout {
			break
		}
	}
	poll.Stop()
	s.ReadyAfter = clock() - t0
	s.ConsumersReady = int(r.readyCount.Load())

	start := clock()
	s.Started = time.Now()
	r.warmEnd.Store(int64(start + w.Warmup))
	r.end.Store(int64(start + w.Warmup + w.Duration))
	producers := make([]*producer, w.Producers)
	var pwg sync.WaitGroup
	for i := range producers {
		p := &producer{r: r, pub: newHist(), delay: newHist()}
		producers[i] = p
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			if w.OpenLoop() {
				interval := float64(w.Producers) / w.Rate * 1e9
				p.openLoop(ctx, start+time.Duration(float64(i)*interval/float64(w.Producers)), interval)
			} else {
				p.closedLoop(ctx)
			}
		}()
	}
	produced := make(chan struct{})
	go func() { pwg.Wait(); close(produced) }()

	live := func(phase string) Live {
		return Live{Phase: phase, Elapsed: clock() - start, Planned: w.Warmup + w.Duration,
			Published: r.published.Load(), Received: r.received.Load(), Errors: r.errors.Load()}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-produced:
			break wait
		case <-tick.C:
			phase := "measure"
			if clock() < start+w.Warmup {
				phase = "warm-up"
			}
			observe(live(phase))
		}
	}

	// Drain: the end-to-end latency of messages still in flight belongs to
	// the run.
	deadline := clock() + DrainTimeout
	last, lastAt := r.received.Load(), clock()
	for r.received.Load() < r.published.Load() && ctx.Err() == nil {
		now := clock()
		if now > deadline || now-lastAt > DrainIdle {
			break
		}
		if n := r.received.Load(); n != last {
			last, lastAt = n, now
		}
		select {
		case <-tick.C:
			observe(live("drain"))
		case <-time.After(10 * time.Millisecond):
		}
	}
	shutdown()
	if err := ctx.Err(); err != nil {
		return s, err
	}

	// Summarise.
	secs := w.Duration.Seconds()
	var pubH, delayH, e2eH, e2eSentH []*hdrhistogram.Histogram
	for _, p := range producers {
		s.Published += p.count
		s.Unsent += p.unsent
		s.PublishErrors += p.errors
		s.FailedMessages += p.failed
		pubH = append(pubH, p.pub)
		delayH = append(delayH, p.delay)
	}
	for _, c := range consumers {
		s.Consumed += c.count
		s.ReceiveErrors += c.recvErrors
		s.AckErrors += c.ackErrors
		e2eH, e2eSentH = append(e2eH, c.e2e), append(e2eSentH, c.e2eSent)
	}
	s.PublishRate = float64(s.Published) / secs
	s.ConsumeRate = float64(s.Consumed) / secs
	s.PublishMBps = s.PublishRate * float64(w.MessageSize) / 1e6
	s.ConsumeMBps = s.ConsumeRate * float64(w.MessageSize) / 1e6
	s.pubHist, s.e2eHist = mergeHists(pubH...), mergeHists(e2eH...)
	s.PublishLatency, s.EndToEnd = percentilesOf(s.pubHist), percentilesOf(s.e2eHist)
	if w.OpenLoop() {
		s.delayHist = mergeHists(delayH...)
		d := percentilesOf(s.delayHist)
		s.SendDelay = &d
		s.e2eSentHist = mergeHists(e2eSentH...)
		es := percentilesOf(s.e2eSentHist)
		s.EndToEndFromSend = &es
	}
	pubd, recv := r.published.Load(), r.received.Load()
	if recv < pubd {
		s.Undrained = pubd - recv
	} else {
		s.Extra = recv - pubd
	}
	s.FirstError = r.firstErr
	if s.Published == 0 && s.PublishErrors > 0 {
		return s, fmt.Errorf("every publish to %s failed; first: %s", topic, s.FirstError)
	}
	return s, nil
}

type producer struct {
	r          *run
	pub, delay *hdrhistogram.Histogram
	count      int64 // messages in the window
	unsent     int64
	errors     int64
	failed     int64
}

// publish sends msgs, whose send times were due, and records them.
func (p *producer) publish(ctx context.Context, msgs []*bus.Message, due []time.Duration, openLoop bool) {
	sent := clock()
	err := p.r.pub.Publish(ctx, p.r.topic, msgs...)
	done := clock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		p.errors++
		p.failed += int64(len(msgs))
		p.r.fail(err)
		// A broker that refuses everything should not be hammered.
		time.Sleep(10 * time.Millisecond)
		return
	}
	p.r.published.Add(int64(len(msgs)))
	for _, d := range due {
		if !p.r.inWindow(d) {
			continue
		}
		p.count++
		record(p.pub, done-d, 1)
		if openLoop {
			record(p.delay, sent-d, 1)
		}
	}
}

// closedLoop publishes batch after batch as soon as the previous one
// returns, pausing only while the backlog is over its bound.
func (p *producer) closedLoop(ctx context.Context) {
	w := p.r.w
	msgs := make([]*bus.Message, w.Batch)
	due := make([]time.Duration, w.Batch)
	end := time.Duration(p.r.end.Load())
	for ctx.Err() == nil {
		now := clock()
		if now >= end {
			return
		}
		if w.MaxBacklog > 0 && p.r.published.Load()-p.r.received.Load() > int64(w.MaxBacklog) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		for i := range msgs {
			msgs[i], due[i] = p.r.message(now, 0), now
		}
		p.publish(ctx, msgs, due, false)
	}
}

// openLoop publishes message i at first+i*interval (nanoseconds). Each
// message carries, and is measured from, that intended time, so a Publish
// that stalls makes every message scheduled behind it late by the stall,
// as it would be for a real caller, rather than hiding the stall in the
// gap before the next send (coordinated omission). Messages already due
// go together, up to the batch size.
func (p *producer) openLoop(ctx context.Context, first time.Duration, interval float64) {
	w := p.r.w
	end := time.Duration(p.r.end.Load())
	at := func(i int64) time.Duration { return first + time.Duration(float64(i)*interval) }
	msgs := make([]*bus.Message, 0, w.Batch)
	due := make([]time.Duration, 0, w.Batch)
	for i := int64(0); ctx.Err() == nil; {
		next := at(i)
		if next >= end {
			return
		}
		now := clock()
		if now >= end {
			// Behind schedule when the window closed: count what never
			// went out, which the latencies cannot show.
			for j := i; at(j) < end; j++ {
				if p.r.inWindow(at(j)) {
					p.unsent++
				}
			}
			return
		}
		if now < next {
			time.Sleep(next - now)
			now = clock()
		}
		msgs, due = msgs[:0], due[:0]
		for len(msgs) < w.Batch && at(i) <= now && at(i) < end {
			msgs = append(msgs, p.r.message(at(i), now-at(i)))
			due = append(due, at(i))
			i++
		}
		p.publish(ctx, msgs, due, true)
	}
}

type consumer struct {
	r                     *run
	sub                   int // index of its subscription
	e2e, e2eSent          *hdrhistogram.Histogram
	count                 int64 // received in the window
	recvErrors, ackErrors int64
}

func (c *consumer) loop(ctx context.Context, sub bus.Subscription) {
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, bus.ErrClosed) {
				return
			}
			c.recvErrors++
			c.r.fail(fmt.Errorf("receive: %w", err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := clock()
		ts, lag, kind, ok := unstamp(d.Message().Body)
		switch {
		case !ok:
			// Not ours: someone else publishes to the topic.
		case kind == kindMarker:
			if !c.r.subReady[c.sub].Swap(true) {
				c.r.readyCount.Add(1)
			}
		default:
			c.r.received.Add(1)
			if c.r.inWindow(ts) {
				record(c.e2e, now-ts, 1)
				record(c.e2eSent, now-ts-lag, 1)
			}
			if c.r.inWindow(now) {
				c.count++
			}
		}
		if err := d.Ack(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, bus.ErrClosed) {
			c.ackErrors++
			c.r.fail(fmt.Errorf("ack: %w", err))
		}
	}
}
