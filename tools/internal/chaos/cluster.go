package chaos

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

	// RemoteURL is the URL of the scenarios with a consumer in the second
	// client namespace (empty: the family has none here): one with
	// several partitions or queues, and short enough session,
	// visibility or heartbeat timeouts for the cluster to give the cut
	// consumer's work to the other within RemoteFault.
	RemoteURL string
	// RemoteFault is how long those scenarios cut the consumer off.
	RemoteFault time.Duration
	// ChildVia runs a program in the second client namespace
	// (scripts/clusters exec --client 2), ChildArgs make the test binary
	// a consumer process (RunChildIfAsked).
	ChildVia, ChildArgs []string
}

// ClusterScenario is one fault on a cluster while messages flow.
type ClusterScenario struct {
	Name string
	// What the scenario does, for the report.
	What string
	// Weak scenarios are negative controls: they run on WeakURL, and must
	// show lost messages, the proof that the checker sees loss.
	Weak bool
	// Hold keeps the handlers from finishing anything while the fault
	// lasts, so that what is published meanwhile waits in the cluster
	// (a consumer that kept up would have processed it before a node
	// that acknowledged it and then lost it was found out).
	Hold bool
	// Remote runs the second consumer as a process in the second client
	// namespace, on RemoteURL, for RemoteFault.
	Remote bool
	// Delay, when set, is the fault instead of Inject: every connection
	// to the cluster goes through a DelayProxy from the start, which
	// adds Delay each way while the fault lasts.
	Delay time.Duration
	// Inject breaks something and returns what heals it, and the node it
	// hit ("" for the link).
	Inject func(ctx context.Context, e *ClusterEnv, topic, group string) (heal func(context.Context) error, node string, err error)
}

// ClusterResult is a cluster scenario's counts and timings.
type ClusterResult struct {
	Result
	// Node is the node the fault hit ("" for a link fault).
	Node string
	// ToConfirm is the time from the fault to the first success of a
	// Publish called after it, ToProcess to the first handling of a
	// message published after it; -1 when none came.
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
		{Name: "leader-partition", What: "the leader is cut off from its peers but not from the clients (a split brain), then healed; handlers are held while it lasts", Hold: true, Inject: isolateLeader("peers")},
		{Name: "consumer-isolate", What: "a consumer process is cut off from the cluster for longer than its session, visibility or heartbeat timeout, then healed; the other consumer must take its work over", Remote: true, Inject: isolateClient},
		{Name: "link-lossy", What: "the link between the clients and the cluster drops 20 % of its packets each way", Inject: link("lossy", "20")},
		{Name: "link-latency", What: "every connection between the clients and the cluster gets 100 ms more latency each way (a relay in the client namespace)", Delay: 100 * time.Millisecond},
		{Name: "link-slow", What: "the link between the clients and the cluster carries at most 64 kbit/s each way", Inject: link("slow", "64")},
		{Name: "weak-partition", What: "negative control: leader-partition with the weak settings", Weak: true, Hold: true, Inject: isolateLeader("peers")},
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

func isolateClient(ctx context.Context, e *ClusterEnv, _, _ string) (func(context.Context) error, string, error) {
	if err := e.Ctl(ctx, "isolate", "client", "2"); err != nil {
		return nil, "client 2", err
	}
	return func(ctx context.Context) error { return e.Ctl(ctx, "heal", "client", "2") }, "client 2", nil
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
	url, fault := e.URL, e.Fault
	switch {
	case s.Weak:
		if e.WeakURL == "" {
			return r, errors.New("no weak settings for this broker")
		}
		url = e.WeakURL
	case s.Remote:
		if e.RemoteURL == "" {
			return r, errors.New("no consumer in the second client namespace for this broker")
		}
		url, fault = e.RemoteURL, max(e.RemoteFault, e.Fault)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, e.Warm+fault+e.After+e.Drain+2*time.Minute,
		errors.New("cluster scenario deadline passed"))
	defer cancel()
	topic, group := topicName(s.Name), "chaos"
	var proxy *DelayProxy
	if s.Delay > 0 {
		// Before the first connection: the redirect catches new
		// connections only.
		var err error
		if proxy, err = ListenDelay(); err != nil {
			return r, err
		}
		defer proxy.Close()
		if err := e.Ctl(ctx, "link", "redirect", strconv.Itoa(proxy.Port())); err != nil {
			return r, err
		}
		defer func() { _ = e.Ctl(context.Background(), "link", "clear") }()
	}
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
	// When the fault came (zero before), and when each message's first
	// Publish call began: what ToConfirm and ToProcess measure from.
	var (
		faultNanos           atomic.Int64
		sentAt               sync.Map     // message index -> time.Time
		toConfirm, toProcess atomic.Int64 // nanoseconds; -1 until one comes
	)
	toConfirm.Store(-1)
	toProcess.Store(-1)
	firstAfter := func(d *atomic.Int64, began time.Time) {
		if f := faultNanos.Load(); f != 0 && began.UnixNano() >= f {
			d.CompareAndSwap(-1, int64(time.Since(time.Unix(0, f))))
		}
	}
	fill := func(r ClusterResult) ClusterResult {
		r.Result = l.Result()
		r.ToConfirm, r.ToProcess = time.Duration(toConfirm.Load()), time.Duration(toProcess.Load())
		return r
	}
	held := newGate()
	release := held.open
	var holding atomic.Bool
	h := func(ctx context.Context, m *bus.Message) error {
		if holding.Load() {
			if err := held.wait(ctx); err != nil {
				return err
			}
		}
		time.Sleep(2 * time.Millisecond)
		l.Processed(m.ID)
		if f := strings.Fields(string(m.Body)); len(f) == 2 {
			if i, err := strconv.Atoi(f[1]); err == nil {
				if began, ok := sentAt.Load(i); ok {
					firstAfter(&toProcess, began.(time.Time))
				}
			}
		}
		return nil
	}
	var consumers []*consumer
	defer func() {
		release()
		for _, k := range consumers {
			_ = k.stop()
		}
	}()
	var remote *Child
	if s.Remote {
		spec := ChildSpec{URL: url, Topic: topic, Group: group, Concurrency: 4, Work: 4 * time.Millisecond, ShutdownTimeout: 10 * time.Second}
		if remote, err = startChildVia(e.ChildVia, e.ChildArgs, spec, "B", l); err != nil {
			return r, err
		}
		defer remote.Stop()
	}
	for i := range 2 {
		if i == 1 && remote != nil {
			break
		}
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
				i, began := int(next.Add(1)), time.Now()
				sentAt.Store(i, began)
				if err := p.send(ctx, []int{i}); err != nil {
					pubErrs[g] = err
					return
				}
				firstAfter(&toConfirm, began)
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
		return fill(r), err
	}
	if err := sleep(e.Warm); err != nil {
		return fail(err)
	}
	if l.ProcessedCount() == 0 {
		return fail(fmt.Errorf("nothing processed in the %v before the fault (%d confirmed)", e.Warm, l.ConfirmedCount()))
	}
	var remoteBefore int
	if remote != nil {
		// The consumer cut off must have had work to lose.
		if err := waitFor(ctx, "the consumer process to have work", func() bool { return remote.Done() > 0 }); err != nil {
			return fail(fmt.Errorf("%w\n%s", err, remote.Stderr()))
		}
		remoteBefore = remote.Done()
	}
	holding.Store(s.Hold)
	var (
		heal func(context.Context) error
		node string
	)
	if proxy != nil {
		proxy.SetDelay(s.Delay)
		heal = func(context.Context) error { proxy.SetDelay(0); return nil }
	} else {
		heal, node, err = s.Inject(ctx, e, topic, group)
	}
	r.Node = node
	if err != nil {
		return fail(fmt.Errorf("injecting the fault: %w", err))
	}
	// From the moment the fault is in place: the node dead, the rules
	// loaded.
	faultAt := time.Now()
	faultNanos.Store(faultAt.UnixNano())
	before := l.ConfirmedCount()
	beforeProcessed := l.ProcessedCount()
	e.Logf("%s/%s: fault injected (node %q) after %d confirmed, %d processed", e.Family, s.Name, node, before, beforeProcessed)
	rest := fault - time.Since(faultAt)
	if err := sleep(max(rest, 0)); err != nil {
		_ = heal(context.Background())
		return fail(err)
	}
	healAt := time.Now()
	remoteCut, lagAtHeal := 0, l.Unprocessed()
	if remote != nil {
		remoteCut = remote.Done() - remoteBefore
	}
	err = heal(ctx)
	holding.Store(false)
	release()
	if err != nil {
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
	var note string
	for _, k := range consumers {
		stopErrs = append(stopErrs, k.stop())
	}
	if remote != nil {
		total := remote.Done()
		_, _, gerr := remote.Graceful(30 * time.Second)
		stopErrs = append(stopErrs, gerr)
		note = fmt.Sprintf("the cut-off process B finished %d before the cut, %d while cut off (their acknowledgements could not reach the cluster), %d after the heal; %d confirmed messages waited at the heal",
			remoteBefore, remoteCut, total-remoteBefore-remoteCut, lagAtHeal)
		// Taken over: what waits at the heal is no more than a few
		// seconds of publishing, not the cut-off consumer's share of
		// the whole cut.
		if lagAtHeal > 3*e.Rate {
			stopErrs = append(stopErrs, fmt.Errorf("the other consumer did not take the cut-off one's work over: %d confirmed messages waited at the heal", lagAtHeal))
		}
	}
	stopSampling()
	<-sampled
	r = fill(r)
	r.Note = note
	smu.Lock()
	timings(&r, samples, faultAt, pubEnd)
	smu.Unlock()

	errs := append([]error(nil), pubErrs...)
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

// timings fills in r's stalls from the samples: the longest spells
// between the fault and the end of publishing without a confirm or a
// processed message, and the peak lag.
func timings(r *ClusterResult, ss []sample, faultAt, pubEnd time.Time) {
	var lastC, lastP time.Time = faultAt, faultAt
	for i, s := range ss {
		r.PeakLag = max(r.PeakLag, s.lag)
		if s.at.Before(faultAt) || i == 0 {
			continue
		}
		prev := ss[i-1]
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
