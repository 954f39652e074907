package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// ClusterEnv is what a cluster scenario runs with: a replicated cluster of
// scripts/clusters, reached from the client namespace this process runs
// in, and the script that breaks it.
type ClusterEnv struct {
	// Family is kafka, redis, rabbitmq or rocketmq: the first argument
	// of the script's node commands.
	Family string
	// URL reaches the cluster with the settings that lose nothing
	// confirmed; WeakURL with the weak ones of the negative control
	// (empty: the family has none here).
	URL, WeakURL string
	// Ctl runs scripts/clusters with args ("stop", "kafka", "2").
	Ctl func(ctx context.Context, args ...string) error
	// Leader names the node whose loss matters for the topic and group:
	// the partition leader, the quorum queue's leader, the slot's master.
	Leader func(ctx context.Context, url, topic, group string) (string, error)
	// Rate is how many messages a second the publishers send, one per
	// Publish call.
	Rate int
	// Warm is how long messages flow before the fault, Fault how long it
	// lasts, After how long publishing goes on once it is healed.
	Warm, Fault, After time.Duration
	// Drain bounds the wait, once publishing stopped, for every confirmed
	// message to be processed.
	Drain time.Duration
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// ClusterScenario is one fault on a cluster while messages flow.
type ClusterScenario struct {
	Name string
	// What the scenario does, for the report.
	What string
	// Weak scenarios are negative controls: they run on WeakURL, and must
	// show lost messages, the proof that the checker sees loss.
	Weak bool
	// Inject breaks something and returns what heals it, and the node it
	// hit ("" for the link).
	Inject func(ctx context.Context, e *ClusterEnv, topic, group string) (heal func(context.Context) error, node string, err error)
}

// ClusterResult is a cluster scenario's counts and timings.
type ClusterResult struct {
	Result
	// Node is the node the fault hit ("" for a link fault).
	Node string
	// ToConfirm is the time from the fault to the first Publish that
	// succeeded after it, ToProcess to the first message processed after
	// it; -1 when none came.
	ToConfirm, ToProcess time.Duration
	// PublishStall and ProcessStall are the longest spells, from the
	// fault on, without a confirmed publish or a processed message while
	// publishers ran.
	PublishStall, ProcessStall time.Duration
	// PeakLag is the most confirmed messages waiting to be processed at
	// any moment.
	PeakLag int
	// Weak marks a negative control.
	Weak bool
}

// ClusterScenarios returns every cluster scenario, in the order they run.
func ClusterScenarios() []ClusterScenario {
	return []ClusterScenario{
		{Name: "leader-kill", What: "the leader of the topic is SIGKILLed, and started again once the fault time is over", Inject: killLeader},
		{Name: "leader-isolate", What: "the leader is cut off from its peers and from the clients, then healed", Inject: isolateLeader("all")},
		{Name: "leader-partition", What: "the leader is cut off from its peers but not from the clients (a split brain), then healed", Inject: isolateLeader("peers")},
		{Name: "link-lossy", What: "the link between the clients and the cluster drops 10 % of its packets each way", Inject: link("lossy", "10")},
		{Name: "link-slow", What: "the link between the clients and the cluster carries at most 200 kbit/s each way", Inject: link("slow", "200")},
		{Name: "weak-partition", What: "negative control: leader-partition with the weak settings", Weak: true, Inject: isolateLeader("peers")},
	}
}

type injector = func(ctx context.Context, e *ClusterEnv, topic, group string) (func(context.Context) error, string, error)

func killLeader(ctx context.Context, e *ClusterEnv, topic, group string) (func(context.Context) error, string, error) {
	node, err := e.Leader(ctx, e.URL, topic, group)
	if err != nil {
		return nil, "", err
	}
	if err := e.Ctl(ctx, "stop", e.Family, node); err != nil {
		return nil, node, err
	}
	return func(ctx context.Context) error { return e.Ctl(ctx, "start", e.Family, node) }, node, nil
}

func isolateLeader(from string) injector {
	return func(ctx context.Context, e *ClusterEnv, topic, group string) (func(context.Context) error, string, error) {
		node, err := e.Leader(ctx, e.URL, topic, group)
		if err != nil {
			return nil, "", err
		}
		if err := e.Ctl(ctx, "isolate", e.Family, node, from); err != nil {
			return nil, node, err
		}
		return func(ctx context.Context) error { return e.Ctl(ctx, "heal", e.Family, node) }, node, nil
	}
}

func link(kind, arg string) injector {
	return func(ctx context.Context, e *ClusterEnv, _, _ string) (func(context.Context) error, string, error) {
		if err := e.Ctl(ctx, "link", kind, arg); err != nil {
			return nil, "", err
		}
		return func(ctx context.Context) error { return e.Ctl(ctx, "link", "clear") }, "", nil
	}
}

// sample is the ledger's counts at one moment.
type sample struct {
	at                   time.Time
	confirmed, processed int
	lag                  int
}

// RunCluster runs s on e's cluster: publishers at e.Rate and two
// consumers in one group, each on a connection of its own, the fault
// after e.Warm, healed e.Fault later, publishing until e.After past the
// heal, then the drain. It fails (Result.Err) when a confirmed message is
// lost, or, for a negative control, when none is.
func RunCluster(ctx context.Context, e *ClusterEnv, s ClusterScenario) ClusterResult {
	start := time.Now()
	r, err := runCluster(ctx, e, s)
	r.Scenario, r.Broker, r.Weak, r.Duration = s.Name, e.Family, s.Weak, time.Since(start)
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func runCluster(ctx context.Context, e *ClusterEnv, s ClusterScenario) (ClusterResult, error) {
	l := NewLedger()
	r := ClusterResult{ToConfirm: -1, ToProcess: -1}
	url := e.URL
	if s.Weak {
		if e.WeakURL == "" {
			return r, errors.New("no weak settings for this broker")
		}
		url = e.WeakURL
	}
	ctx, cancel := context.WithTimeoutCause(ctx, e.Warm+e.Fault+e.After+e.Drain+2*time.Minute,
		errors.New("cluster scenario deadline passed"))
	defer cancel()
	topic, group := topicName(s.Name), "chaos"
	pub, err := bus.Open(ctx, url)
	if err != nil {
		return r, err
	}
	defer func() { _ = within(30*time.Second, "closing the publisher", pub.Close) }()
	stopAudit, err := auditDeadLetters(ctx, pub, topic, l)
	if err != nil {
		return r, err
	}
	defer stopAudit()
	h := func(ctx context.Context, m *bus.Message) error {
		time.Sleep(2 * time.Millisecond)
		l.Processed(m.ID)
		return nil
	}
	var consumers []*consumer
	defer func() {
		for _, k := range consumers {
			_ = k.stop()
		}
	}()
	for range 2 {
		k, err := startConsumer(ctx, url, bus.ConsumerConfig{
			Topic: topic, Subscribe: bus.SubscribeOptions{Group: group},
			Concurrency: 4, Backoff: func(int) time.Duration { return 200 * time.Millisecond },
		}, h)
		if err != nil {
			return r, err
		}
		consumers = append(consumers, k)
	}

	// The samples, every 50 ms from the first publish to the end of the
	// drain.
	var (
		smu     sync.Mutex
		samples []sample
	)
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			c, p, u := l.ConfirmedCount(), l.ProcessedCount(), l.Unprocessed()
			smu.Lock()
			samples = append(samples, sample{at: time.Now(), confirmed: c, processed: p, lag: u})
			smu.Unlock()
			select {
			case <-sampling.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { stopSampling(); <-sampled }()

	// Publishers: one message per call, each goroutine at its share of
	// the rate, a message retried until it is confirmed (while one is,
	// its goroutine sends nothing else: the stalls show).
	const goroutines = 4
	interval := time.Second * goroutines / time.Duration(max(e.Rate, goroutines))
	p := publisher{b: pub, topic: topic, l: l}
	publishing, stopPublishing := context.WithCancel(context.Background())
	defer stopPublishing()
	var next atomic.Int64
	var wg sync.WaitGroup
	pubErrs := make([]error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for publishing.Err() == nil {
				if err := p.send(ctx, []int{int(next.Add(1))}); err != nil {
					pubErrs[g] = err
					return
				}
				select {
				case <-tick.C:
				case <-publishing.Done():
				}
			}
		}()
	}

	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	fail := func(err error) (ClusterResult, error) {
		stopPublishing()
		wg.Wait()
		return fill(r, l), err
	}
	if err := sleep(e.Warm); err != nil {
		return fail(err)
	}
	if l.ProcessedCount() == 0 {
		return fail(fmt.Errorf("nothing processed in the %v before the fault (%d confirmed)", e.Warm, l.ConfirmedCount()))
	}
	faultAt := time.Now()
	before := l.ConfirmedCount()
	beforeProcessed := l.ProcessedCount()
	heal, node, err := s.Inject(ctx, e, topic, group)
	r.Node = node
	if err != nil {
		return fail(fmt.Errorf("injecting the fault: %w", err))
	}
	e.Logf("%s/%s: fault injected (node %q) after %d confirmed, %d processed", e.Family, s.Name, node, before, beforeProcessed)
	rest := e.Fault - time.Since(faultAt)
	if err := sleep(max(rest, 0)); err != nil {
		_ = heal(context.Background())
		return fail(err)
	}
	healAt := time.Now()
	if err := heal(ctx); err != nil {
		return fail(fmt.Errorf("healing the fault: %w", err))
	}
	e.Logf("%s/%s: healed after %v (%d confirmed, %d processed)", e.Family, s.Name,
		time.Since(faultAt).Round(100*time.Millisecond), l.ConfirmedCount(), l.ProcessedCount())
	if err := sleep(max(e.After-time.Since(healAt), 0)); err != nil {
		return fail(err)
	}
	stopPublishing()
	wg.Wait()
	pubEnd := time.Now()
	// A negative control waits less: what its weak settings lost does
	// not come back.
	wait := e.Drain
	if s.Weak {
		wait = min(wait, 30*time.Second)
	}
	drain, cancelDrain := context.WithTimeout(ctx, wait)
	settleErr := l.WaitSettled(drain, 0)
	cancelDrain()
	if settleErr == nil {
		time.Sleep(settle)
	}
	var stopErrs []error
	for _, k := range consumers {
		stopErrs = append(stopErrs, k.stop())
	}
	stopSampling()
	<-sampled
	r = fill(r, l)
	smu.Lock()
	timings(&r, samples, faultAt, pubEnd, before, beforeProcessed)
	smu.Unlock()

	var errs []error
	for _, err := range pubErrs {
		errs = append(errs, err)
	}
	switch {
	case s.Weak && r.Lost == 0:
		errs = append(errs, errors.New("the negative control lost nothing: this run cannot show that the checker sees loss"))
	case s.Weak:
		r.Note = fmt.Sprintf("%d confirmed messages lost, as the weak settings allow", r.Lost)
	case settleErr != nil:
		errs = append(errs, settleErr)
	}
	if !s.Weak {
		errs = append(errs, check(l, "", ""))
		errs = append(errs, stopErrs...)
	}
	return r, errors.Join(errs...)
}

func fill(r ClusterResult, l *Ledger) ClusterResult {
	r.Result = l.Result()
	return r
}

// timings fills in r's times from the samples: the first confirm and the
// first processed message after the fault (counts beyond those at the
// fault), the longest stalls between the fault and the end of publishing,
// and the peak lag.
func timings(r *ClusterResult, ss []sample, faultAt, pubEnd time.Time, confirmed, processed int) {
	var lastC, lastP time.Time = faultAt, faultAt
	for i, s := range ss {
		r.PeakLag = max(r.PeakLag, s.lag)
		if s.at.Before(faultAt) || i == 0 {
			continue
		}
		prev := ss[i-1]
		if r.ToConfirm < 0 && s.confirmed > confirmed {
			r.ToConfirm = s.at.Sub(faultAt)
		}
		if r.ToProcess < 0 && s.processed > processed {
			r.ToProcess = s.at.Sub(faultAt)
		}
		if s.at.After(pubEnd) {
			continue
		}
		if s.confirmed > prev.confirmed {
			r.PublishStall = max(r.PublishStall, s.at.Sub(lastC))
			lastC = s.at
		}
		if s.processed > prev.processed {
			r.ProcessStall = max(r.ProcessStall, s.at.Sub(lastP))
			lastP = s.at
		}
	}
	r.PublishStall = max(r.PublishStall, pubEnd.Sub(lastC))
	r.ProcessStall = max(r.ProcessStall, pubEnd.Sub(lastP))
}

// auditDeadLetters records in l what reaches the topic's dead-letter
// topic, until the returned function is called.
func auditDeadLetters(ctx context.Context, b bus.Broker, topic string, l *Ledger) (func(), error) {
	dlq, err := b.Subscribe(ctx, topic+".dlq", bus.SubscribeOptions{Prefetch: 16})
	if err != nil {
		return nil, fmt.Errorf("subscribing to the dead-letter topic: %w", err)
	}
	auditCtx, stop := context.WithCancel(ctx)
	audited := make(chan struct{})
	go func() {
		defer close(audited)
		for {
			d, err := dlq.Receive(auditCtx)
			if err != nil {
				if auditCtx.Err() != nil || errors.Is(err, bus.ErrClosed) {
					return
				}
				continue
			}
			m := d.Message()
			l.DeadLettered(m.ID, Dead{Reason: m.Headers[bus.HeaderError], Attempts: m.Headers[bus.HeaderAttempts], Origin: m.Headers[bus.HeaderOriginTopic]})
			_ = d.Ack(auditCtx)
		}
	}()
	return func() {
		stop()
		<-audited
		_ = within(30*time.Second, "closing the dead-letter subscription", dlq.Close)
	}, nil
}

// ClusterTable renders cluster results as a Markdown table.
func ClusterTable(rs []ClusterResult) string {
	var b strings.Builder
	b.WriteString("| broker | scenario | node | published | confirmed | processed | lost | duplicated | dead-lettered | to next confirm | to next processed | longest publish stall | longest processing stall | peak lag | result |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	secs := func(d time.Duration) string {
		if d < 0 {
			return "none"
		}
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	for _, r := range rs {
		res := "ok"
		if r.Err != "" {
			res = "FAIL: " + strings.ReplaceAll(strings.ReplaceAll(r.Err, "|", "/"), "\n", " ")
		}
		name := r.Scenario
		if r.Weak {
			name += " (negative control)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s | %d | %s |\n",
			r.Broker, name, r.Node, r.Published, r.Confirmed, r.Processed, r.Lost, r.Duplicated, r.DeadLettered,
			secs(r.ToConfirm), secs(r.ToProcess), secs(r.PublishStall), secs(r.ProcessStall), r.PeakLag, res)
	}
	return b.String()
}
