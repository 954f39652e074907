package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Env is what every scenario runs with.
type Env struct {
	// Instance is the broker; BrokerKill kills and restarts it.
	Instance Instance
	// Messages is how many messages each scenario publishes.
	Messages int
	// Deadline bounds each scenario; past it the scenario fails with what
	// it was waiting for.
	Deadline time.Duration
	// ChildArgs are the arguments that make this executable, started
	// again with ChildEnv set, reach RunChildIfAsked (for a test binary:
	// -test.run=^$).
	ChildArgs []string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// Scenario is one fault injected while messages flow.
type Scenario struct {
	Name string
	// What the scenario does, for the report.
	What string
	Run  func(ctx context.Context, e *Env) (Result, error)
}

// Scenarios returns every scenario, in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{"handler-faults", "handlers panic, hang past their time limit, and fail every time (poison)", HandlerFaults},
		{"consumer-sigkill", "a consumer process is SIGKILLed mid-work; another process takes over", ConsumerKill},
		{"consumer-sigterm", "a consumer process gets SIGTERM with work in flight and shuts down gracefully; another takes over", ConsumerTerm},
		{"broker-sigkill", "the broker is SIGKILLed and restarted while publishers and a consumer run", BrokerKill},
	}
}

// Run runs s within e.Deadline and fills in the result's names, time and
// error.
func (s Scenario) run(ctx context.Context, e *Env) Result {
	ctx, cancel := context.WithTimeoutCause(ctx, e.Deadline, fmt.Errorf("scenario deadline of %v passed", e.Deadline))
	defer cancel()
	start := time.Now()
	type outcome struct {
		r   Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := s.Run(ctx, e)
		done <- outcome{r, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(e.Deadline + hangGrace):
		// Something ignored the deadline: report where it is stuck
		// rather than hang the run.
		o.err = fmt.Errorf("scenario still running %v past its deadline; stuck goroutines:\n%s", hangGrace, stacks())
	}
	r := o.r
	r.Scenario, r.Broker, r.Duration = s.Name, e.Instance.Name(), time.Since(start)
	if o.err != nil {
		r.Err = o.err.Error()
	}
	return r
}

// hangGrace is how long past its deadline a scenario may take to return
// (closing connections, stopping consumers).
const hangGrace = 90 * time.Second

// stacks returns the stacks of the goroutines in omnibus code.
func stacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var keep []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "omnibus-mq/omnibus/adapters") || strings.Contains(g, "omnibus-mq/omnibus/tools/internal/chaos.publisher") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

// RunScenario runs one scenario with its deadline and returns its result;
// Result.Err says why it failed.
func RunScenario(ctx context.Context, e *Env, s Scenario) Result { return s.run(ctx, e) }

func topicName(scenario string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "chaos-" + scenario + "-" + hex.EncodeToString(b[:])
}

// message roles, carried in the body.
const (
	roleOK     = "ok"
	rolePanic  = "panic"  // panics on its first handling
	roleHang   = "hang"   // blocks past the time limit on its first handling
	rolePoison = "poison" // fails every time
)

// publisher sends messages from several goroutines in small batches and
// retries what was not confirmed until it is, or ctx ends.
type publisher struct {
	b          bus.Publisher
	topic      string
	l          *Ledger
	n          int
	goroutines int
	batch      int
	pause      time.Duration
	role       func(i int) string
}

func (p publisher) run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, p.goroutines)
	for g := range p.goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var idx []int
			for i := g; i < p.n; i += p.goroutines {
				idx = append(idx, i)
			}
			for len(idx) > 0 {
				k := min(p.batch, len(idx))
				if err := p.send(ctx, idx[:k]); err != nil {
					errs[g] = err
					return
				}
				idx = idx[k:]
				if p.pause > 0 {
					select {
					case <-time.After(p.pause):
					case <-ctx.Done():
					}
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p publisher) send(ctx context.Context, idx []int) error {
	msgs := make([]*bus.Message, len(idx))
	for j, i := range idx {
		role := roleOK
		if p.role != nil {
			role = p.role(i)
		}
		m := bus.NewMessage([]byte(role + " " + strconv.Itoa(i)))
		m.Key = strconv.Itoa(i)
		msgs[j] = m
		p.l.Sent(role == rolePoison, m.ID)
	}
	pending := msgs
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.b.Publish(pctx, p.topic, pending...)
		cancel()
		if err == nil {
			p.l.Confirmed(ids(pending)...)
			return nil
		}
		p.l.PublishFailed(err)
		var pe *bus.PublishError
		if errors.As(err, &pe) {
			un := map[int]bool{}
			for _, i := range pe.Unconfirmed {
				un[i] = true
			}
			var rest []*bus.Message
			for i, m := range pending {
				if un[i] {
					rest = append(rest, m)
				} else {
					p.l.Confirmed(m.ID)
				}
			}
			pending = rest
			if len(pending) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publishing gave up with %d messages unconfirmed: %w (last error: %v)", len(pending), context.Cause(ctx), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ids(ms []*bus.Message) []string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.ID
	}
	return s
}

// gate holds handlers back until it is opened.
type gate struct {
	ch chan struct{}
	// open lets every waiting and later handler through; it may be
	// called more than once.
	open func()
}

func newGate() *gate {
	g := &gate{ch: make(chan struct{})}
	g.open = sync.OnceFunc(func() { close(g.ch) })
	return g
}

// wait returns once the gate is open, or ctx's error when it ends first.
func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// within runs fn and fails if it does not return within d, so that a
// stuck Close cannot hang a scenario.
func within(d time.Duration, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("%s did not return within %v", what, d)
	}
}

// settle is how long a scenario keeps its consumers running once every
// message is accounted for, so that late redeliveries (duplicates) are
// counted too.
const settle = 3 * time.Second

// consumer runs a bus.Consumer in this process on a connection of its own.
type consumer struct {
	b   bus.Broker
	c   *bus.Consumer
	err chan error

	once    sync.Once
	stopErr error
}

func startConsumer(ctx context.Context, url string, cfg bus.ConsumerConfig, h bus.Handler) (*consumer, error) {
	b, err := bus.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	c, err := bus.NewConsumer(b, cfg, h)
	if err != nil {
		b.Close()
		return nil, err
	}
	k := &consumer{b: b, c: c, err: make(chan error, 1)}
	go func() { k.err <- c.Run(context.Background()) }()
	// Subscribed before the scenario goes on: a fault that cut its
	// Subscribe short would end the consumer before it ever ran.
	select {
	case <-c.Ready():
		return k, nil
	case <-c.Done():
		err := <-k.err
		b.Close()
		return nil, fmt.Errorf("consumer: %w", err)
	case <-ctx.Done():
		k.stop()
		return nil, ctx.Err()
	}
}

// stop shuts the consumer down and closes its connection. It may be
// called again; later calls return the first one's result.
func (k *consumer) stop() error {
	k.once.Do(func() {
		k.stopErr = within(60*time.Second, "consumer shutdown", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			err := k.c.Shutdown(ctx)
			if err == nil {
				err = <-k.err
			}
			return errors.Join(err, k.b.Close())
		})
	})
	return k.stopErr
}

// failed returns the error that ended the consumer early, if it has.
func (k *consumer) failed() error {
	select {
	case err := <-k.err:
		k.err <- err
		return fmt.Errorf("consumer stopped: %v", err)
	default:
		return nil
	}
}

func open(ctx context.Context, e *Env) (bus.Broker, func(), error) {
	b, err := bus.Open(ctx, e.Instance.URL())
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = within(30*time.Second, "closing the publisher", b.Close) }, nil
}

func check(l *Ledger, reason, attempts string) error {
	if p := l.Check(reason, attempts); len(p) > 0 {
		return errors.New(strings.Join(p, "; "))
	}
	return nil
}

// HandlerFaults: one message in ten panics on its first handling, one
// hangs until its 300ms time limit cancels it, and one is poison: it fails
// every time and must end in the dead-letter topic after 3 attempts with
// the handler's error as its reason. Every other message, the panicking
// and hanging ones included, must be processed.
func HandlerFaults(ctx context.Context, e *Env) (Result, error) {
	const attempts = 3
	const reason = "poison message refused"
	l := NewLedger()
	topic := topicName("faults")
	pub, closePub, err := open(ctx, e)
	if err != nil {
		return l.Result(), err
	}
	defer closePub()

	// The dead-letter topic's reader exists before anything can land there.
	stopAudit, err := auditDeadLetters(ctx, pub, topic, l)
	if err != nil {
		return l.Result(), err
	}
	defer stopAudit()

	var (
		mu                   sync.Mutex
		seen                 = map[string]int{}
		panics, hangs, fails atomic.Int64
	)
	h := func(ctx context.Context, m *bus.Message) error {
		mu.Lock()
		seen[m.ID]++
		first := seen[m.ID] == 1
		mu.Unlock()
		switch strings.Fields(string(m.Body))[0] {
		case rolePanic:
			if first {
				panics.Add(1)
				panic("chaos: handler panic on " + m.ID)
			}
		case roleHang:
			if first {
				hangs.Add(1)
				<-ctx.Done()
				return ctx.Err()
			}
		case rolePoison:
			fails.Add(1)
			return errors.New(reason)
		}
		time.Sleep(time.Millisecond)
		l.Processed(m.ID)
		return nil
	}
	k, err := startConsumer(ctx, e.Instance.URL(), bus.ConsumerConfig{
		Topic:          topic,
		Subscribe:      bus.SubscribeOptions{MaxAttempts: attempts},
		Concurrency:    8,
		HandlerTimeout: 300 * time.Millisecond,
		Backoff:        func(int) time.Duration { return 100 * time.Millisecond },
	}, h)
	if err != nil {
		return l.Result(), err
	}
	defer k.stop()
	p := publisher{b: pub, topic: topic, l: l, n: e.Messages, goroutines: 2, batch: 10, pause: 5 * time.Millisecond,
		role: func(i int) string {
			switch i % 10 {
			case 1:
				return rolePanic
			case 2:
				return roleHang
			case 3:
				return rolePoison
			}
			return roleOK
		}}
	if err := p.run(ctx); err != nil {
		return l.Result(), err
	}
	if err := l.WaitSettled(ctx, e.Messages); err != nil {
		return l.Result(), errors.Join(err, k.failed())
	}
	time.Sleep(settle)
	serr := k.stop()
	r := l.Result()
	r.Note = fmt.Sprintf("%d panics, %d handlings cut off by the time limit, %d poison failures", panics.Load(), hangs.Load(), fails.Load())
	return r, errors.Join(check(l, reason, strconv.Itoa(attempts)), serr)
}

// childSpec is the consumer process of the process scenarios.
func childSpec(e *Env, topic string, work time.Duration) ChildSpec {
	return ChildSpec{URL: e.Instance.URL(), Topic: topic, Concurrency: 4, Work: work, ShutdownTimeout: 10 * time.Second}
}

// ConsumerKill: while publishers run, consumer process A works on the
// messages (50-100ms each, 4 at a time) and is SIGKILLed once it has
// finished a quarter of them, with work in flight (asserted) and
// unacknowledged; process B (10-20ms a message) starts then and must
// process everything A did not, A's unacknowledged messages included. A's
// handlers are slow so that the kill lands before the ones running
// finish, even on a loaded machine.
func ConsumerKill(ctx context.Context, e *Env) (Result, error) {
	l := NewLedger()
	topic := topicName("sigkill")
	pub, closePub, err := open(ctx, e)
	if err != nil {
		return l.Result(), err
	}
	defer closePub()
	spec := childSpec(e, topic, 20*time.Millisecond)
	slow := spec
	slow.Work = 100 * time.Millisecond
	a, err := startChild(e.ChildArgs, slow, "A", l)
	if err != nil {
		return l.Result(), err
	}
	defer a.Stop()
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- publisher{b: pub, topic: topic, l: l, n: e.Messages, goroutines: 2, batch: 5, pause: 10 * time.Millisecond}.run(ctx)
	}()
	// A quarter done, and the kill lands while handlers are running: a
	// handler takes at least 10ms, far longer than a line takes to reach
	// this process and the signal to reach A.
	if err := waitFor(ctx, "consumer process A to finish a quarter of the messages with handlers running",
		func() bool { return a.Done() >= e.Messages/4 && a.InFlight() > 0 }); err != nil {
		return l.Result(), fmt.Errorf("%w\n%s", err, a.Stderr())
	}
	if err := a.Kill(); err != nil {
		return l.Result(), err
	}
	doneByA, inFlight := a.Done(), a.InFlight()
	b, berr, err := takeOver(ctx, e, spec, l, pubErr)
	if b != nil {
		defer b.Stop()
	}
	if err != nil {
		return l.Result(), err
	}
	r := l.Result()
	r.Note = fmt.Sprintf("A finished %d and had %d in flight when SIGKILLed; B finished %d", doneByA, inFlight, b.Done())
	errs := []error{check(l, "", ""), berr}
	if inFlight == 0 {
		errs = append(errs, errors.New("consumer process A had no message in flight when it was killed"))
	}
	return r, errors.Join(errs...)
}

// takeOver starts consumer process B on spec once A is gone, waits for
// the publishers to finish and for every message to settle, then shuts B
// down gracefully. It returns B (the caller stops it) once started, the
// error of B's shutdown, and what kept the scenario from getting there.
func takeOver(ctx context.Context, e *Env, spec ChildSpec, l *Ledger, pubErr <-chan error) (*Child, error, error) {
	b, err := startChild(e.ChildArgs, spec, "B", l)
	if err != nil {
		return nil, nil, err
	}
	if err := <-pubErr; err != nil {
		return b, nil, err
	}
	if err := l.WaitSettled(ctx, e.Messages); err != nil {
		return b, nil, fmt.Errorf("%w\n%s", err, b.Stderr())
	}
	time.Sleep(settle)
	_, _, berr := b.Graceful(30 * time.Second)
	return b, berr, nil
}

// ConsumerTerm: consumer process A works on the messages (25-50ms each, 4
// at a time) and gets SIGTERM once it has finished a quarter of them (at
// most 100). It must stop taking work, let the handlers in flight finish
// (none cancelled, at least one running at the signal) and exit 0 within
// its shutdown timeout; process B then takes over and everything must be
// processed.
func ConsumerTerm(ctx context.Context, e *Env) (Result, error) {
	l := NewLedger()
	topic := topicName("sigterm")
	pub, closePub, err := open(ctx, e)
	if err != nil {
		return l.Result(), err
	}
	defer closePub()
	spec := childSpec(e, topic, 50*time.Millisecond)
	a, err := startChild(e.ChildArgs, spec, "A", l)
	if err != nil {
		return l.Result(), err
	}
	defer a.Stop()
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- publisher{b: pub, topic: topic, l: l, n: e.Messages, goroutines: 2, batch: 5, pause: 10 * time.Millisecond}.run(ctx)
	}()
	threshold := min(e.Messages/4, 100)
	// As in ConsumerKill, the signal is sent while handlers are running:
	// the broker may have run A dry for a moment (publishers wait for
	// confirms that wait for the disk).
	if err := waitFor(ctx, "consumer process A to finish a quarter of the messages with handlers running",
		func() bool { return a.Done() >= threshold && a.InFlight() > 0 }); err != nil {
		return l.Result(), fmt.Errorf("%w\n%s", err, a.Stderr())
	}
	running, finishing, aerr := a.Graceful(spec.ShutdownTimeout + 15*time.Second)
	if aerr != nil {
		return l.Result(), aerr
	}
	b, berr, err := takeOver(ctx, e, spec, l, pubErr)
	if b != nil {
		defer b.Stop()
	}
	if err != nil {
		return l.Result(), err
	}
	r := l.Result()
	r.Note = fmt.Sprintf("A had %d handlers running at SIGTERM, finished %d (%d after the signal) and exited 0; B finished %d",
		running, a.Done(), finishing, b.Done())
	errs := []error{check(l, "", ""), berr}
	if running == 0 {
		errs = append(errs, errors.New("consumer process A had no handler running when SIGTERM arrived"))
	}
	return r, errors.Join(errs...)
}

// BrokerKill: two publishers send messages in batches of 10 while a
// consumer is subscribed; once a third is confirmed the broker is
// SIGKILLed, left down for a second and restarted on the same data. The
// consumer's handlers wait until the kill: it holds its first deliveries,
// and every other confirmed message is in the broker's store when the
// broker dies (a consumer that kept up with the publishers would leave
// nothing there to lose). The publishers must see errors meanwhile and
// retry what was not confirmed; every message a Publish confirmed must be
// processed.
func BrokerKill(ctx context.Context, e *Env) (Result, error) {
	l := NewLedger()
	topic := topicName("brokerkill")
	pub, closePub, err := open(ctx, e)
	if err != nil {
		return l.Result(), err
	}
	defer closePub()
	held := newGate()
	release := held.open
	k, err := startConsumer(ctx, e.Instance.URL(), bus.ConsumerConfig{
		Topic:       topic,
		Concurrency: 4,
		Backoff:     func(int) time.Duration { return 100 * time.Millisecond },
	}, func(ctx context.Context, m *bus.Message) error {
		if err := held.wait(ctx); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
		l.Processed(m.ID)
		return nil
	})
	if err != nil {
		return l.Result(), err
	}
	defer k.stop()
	// Before the consumer stops, on every way out.
	defer release()
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- publisher{b: pub, topic: topic, l: l, n: e.Messages, goroutines: 2, batch: 10, pause: 5 * time.Millisecond}.run(ctx)
	}()
	if err := waitFor(ctx, "a third of the messages to be confirmed", func() bool { return l.ConfirmedCount() >= e.Messages/3 }); err != nil {
		return l.Result(), err
	}
	killed := time.Now()
	if err := e.Instance.Kill(); err != nil {
		return l.Result(), err
	}
	// Counted once the broker is gone: the confirmed messages not processed
	// are in its store, but for the few the consumer had received.
	atKill, backlog := l.ConfirmedCount(), l.Unprocessed()
	release()
	e.Logf("%s: broker SIGKILLed with %d of %d messages confirmed, %d of them not processed yet", e.Instance.Name(), atKill, e.Messages, backlog)
	time.Sleep(time.Second)
	if err := e.Instance.Start(ctx); err != nil {
		return l.Result(), fmt.Errorf("restarting the broker: %w", err)
	}
	down := time.Since(killed)
	e.Logf("%s: broker back after %v", e.Instance.Name(), down.Round(100*time.Millisecond))
	if err := <-pubErr; err != nil {
		return l.Result(), err
	}
	if err := l.WaitSettled(ctx, e.Messages); err != nil {
		return l.Result(), errors.Join(err, k.failed())
	}
	time.Sleep(settle)
	serr := k.stop()
	r := l.Result()
	r.Note = fmt.Sprintf("killed with %d of %d confirmed (%d of them not processed yet), down %.1fs", atKill, e.Messages, backlog, down.Seconds())
	errs := []error{check(l, "", ""), serr}
	if l.PublishErrors() == 0 {
		errs = append(errs, errors.New("no Publish failed while the broker was down"))
	}
	return r, errors.Join(errs...)
}
