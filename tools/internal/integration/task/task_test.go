package task_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	_ "github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/task"
)

type sms struct {
	Phone string `json:"phone"`
	Code  string `json:"code"`
}

// backend opens connections to one broker for a test.
type backend func(t *testing.T) bus.Broker

func backends(t *testing.T) map[string]backend {
	return map[string]backend{
		"memory": func(t *testing.T) bus.Broker {
			b, err := bus.Open(context.Background(), "mem://task-tests")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		"redisstream": func(t *testing.T) bus.Broker { return open(t, brokerURL(t, "redisstream")) },
		"kafka":       func(t *testing.T) bus.Broker { return open(t, brokerURL(t, "kafka")) },
		"rocketmq":    func(t *testing.T) bus.Broker { return open(t, brokerURL(t, "rocketmq")) },
		"rabbitmq": func(t *testing.T) bus.Broker {
			url := brokertest.AMQP(t)
			b, err := rabbitmq.New(context.Background(), rabbitmq.Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
	}
}

// brokerURL returns the URL of a real broker for these tests.
func brokerURL(t testing.TB, name string) string {
	switch name {
	case "rabbitmq":
		return brokertest.AMQP(t)
	case "redisstream":
		return brokertest.Redis(t)
	case "rocketmq":
		return brokertest.RocketMQ(t)
	case "kafka":
		// Quick rebalances: workers join and leave within each test.
		return "kafka://" + strings.Join(brokertest.Kafka(t), ",") +
			"?session_timeout=6s&heartbeat_interval=200ms&join_backoff=200ms&commit_interval=100ms&fetch_max_wait=250ms"
	}
	t.Fatalf("no broker %q", name)
	return ""
}

func open(t testing.TB, url string) bus.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// run starts w and returns a function that stops it and checks Run's result.
func run(t *testing.T, w *task.Worker) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-res; err != nil {
				t.Errorf("Worker.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func wait(t *testing.T, st task.Store, id string) task.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := task.Wait(ctx, st, id)
	if err != nil {
		t.Fatalf("Wait(%s): %v (last state %+v)", id, err, s)
	}
	return s
}

func deadLetter(t *testing.T, b bus.Broker, queue string) *bus.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, queue+".dlq", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("no dead letter on %s.dlq: %v", queue, err)
	}
	d.Ack(ctx)
	return d.Message()
}

func fast() task.Option {
	return task.RetryBackoff(func(int) time.Duration { return 50 * time.Millisecond })
}

func TestTasks(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("DelayRunsAndRecordsResult", func(t *testing.T) { testResult(t, open) })
			t.Run("RetriesThenSucceeds", func(t *testing.T) { testRetries(t, open) })
			t.Run("DeadLettersAfterMaxRetries", func(t *testing.T) { testMaxRetries(t, open) })
			t.Run("UnknownAndUndecodable", func(t *testing.T) { testUnknown(t, open) })
			t.Run("CountdownSurvivesRestart", func(t *testing.T) { testCountdown(t, open) })
			t.Run("Expired", func(t *testing.T) { testExpired(t, open) })
			t.Run("TimeLimit", func(t *testing.T) { testTimeLimit(t, open) })
			t.Run("TraceContext", func(t *testing.T) { testTrace(t, open) })
		})
	}
}

func queue(t *testing.T) string { return "tasks-" + bus.NewID() }

func testResult(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	double := task.Define[int]("math.double", task.OnQueue(q))
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Concurrency: 4, Results: store})
	if err != nil {
		t.Fatal(err)
	}
	task.HandleResult(w, double, func(ctx context.Context, n int) (int, error) {
		info, _ := task.InfoFrom(ctx)
		if info.Name != "math.double" || info.Attempt != 1 {
			return 0, fmt.Errorf("info = %+v", info)
		}
		return 2 * n, nil
	})
	ctx := context.Background()
	ids := map[string]int{}
	for n := range 10 {
		id, err := double.Delay(ctx, b, n)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := store.Get(ctx, id); s.Status != task.Pending {
			t.Fatalf("state before any worker ran = %s, want PENDING", s.Status)
		}
		ids[id] = n
	}
	run(t, w)
	for id, n := range ids {
		s := wait(t, store, id)
		var got int
		if s.Status != task.Success || s.Decode(&got) != nil || got != 2*n {
			t.Fatalf("task %s: %+v, want SUCCESS with %d", id, s, 2*n)
		}
	}
}

func testRetries(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	flaky := task.Define[sms]("sms.flaky", task.OnQueue(q), task.MaxRetries(5),
		task.RetryBackoff(func(n int) time.Duration {
			return map[int]time.Duration{1: 50 * time.Millisecond}[n] + time.Duration(n-1)*time.Hour
		}))
	store := task.NewMemoryStore()
	metrics := task.NewMetrics()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store, Observers: []func(task.Event){metrics.Observe}})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var states []task.Status
	var mu sync.Mutex
	task.Handle(w, flaky, func(ctx context.Context, s sms) error {
		info, _ := task.InfoFrom(ctx)
		mu.Lock()
		st, _ := store.Get(ctx, info.ID)
		states = append(states, st.Status)
		mu.Unlock()
		switch calls.Add(1) {
		case 1:
			return errors.New("gateway 503")
		case 2:
			// The task's backoff is an hour: only the asked-for delay can
			// bring the third run within the test's time.
			return bus.RetryAfter(errors.New("gateway 429"), 50*time.Millisecond)
		}
		if s.Phone != "+15550100" {
			return bus.NoRetry(fmt.Errorf("args = %+v", s))
		}
		return nil
	})
	run(t, w)
	id, err := flaky.Delay(context.Background(), b, sms{Phone: "+15550100", Code: "123456"})
	if err != nil {
		t.Fatal(err)
	}
	s := wait(t, store, id)
	if s.Status != task.Success || s.Attempt != 3 || calls.Load() != 3 {
		t.Fatalf("state %+v after %d calls, want SUCCESS on attempt 3", s, calls.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	want := []task.Status{task.Started, task.Started, task.Started}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("states seen by the handler = %v, want %v", states, want)
	}
	if metrics.Count("sms.flaky", task.Retry) != 2 || metrics.Count("sms.flaky", task.Success) != 1 {
		t.Fatalf("metrics: %d retries, %d successes; want 2 and 1",
			metrics.Count("sms.flaky", task.Retry), metrics.Count("sms.flaky", task.Success))
	}
	var out strings.Builder
	metrics.WriteTo(&out)
	if !strings.Contains(out.String(), `omnibus_tasks_total{task="sms.flaky",status="retry"} 2`) {
		t.Fatalf("Prometheus output lacks the retry count:\n%s", out.String())
	}
}

func testMaxRetries(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	doomed := task.Define[sms]("sms.doomed", task.OnQueue(q), task.MaxRetries(2), fast())
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	task.Handle(w, doomed, func(context.Context, sms) error {
		calls.Add(1)
		return errors.New("number blocked by carrier")
	})
	run(t, w)
	id, err := doomed.Delay(context.Background(), b, sms{Phone: "+15550100"})
	if err != nil {
		t.Fatal(err)
	}
	s := wait(t, store, id)
	if s.Status != task.Failure || !strings.Contains(s.Error, "blocked") || calls.Load() != 3 {
		t.Fatalf("state %+v after %d calls, want FAILURE after 3 runs", s, calls.Load())
	}
	dl := deadLetter(t, b, q)
	if dl.ID != id || !strings.Contains(dl.Headers.Get(bus.HeaderError), "blocked") || dl.Headers.Get(bus.HeaderTask) != "sms.doomed" {
		t.Fatalf("dead letter %s headers %v", dl.ID, dl.Headers)
	}
}

func testUnknown(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	known := task.Define[sms]("sms.known", task.OnQueue(q))
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	task.Handle(w, known, func(context.Context, sms) error { return errors.New("must not run") })
	run(t, w)
	ctx := context.Background()
	stranger := task.Define[sms]("sms.stranger", task.OnQueue(q))
	id, err := stranger.Delay(ctx, b, sms{})
	if err != nil {
		t.Fatal(err)
	}
	dl := deadLetter(t, b, q)
	if dl.ID != id || !strings.Contains(dl.Headers.Get(bus.HeaderError), "unknown task") {
		t.Fatalf("dead letter for an unknown task: %s %v", dl.ID, dl.Headers)
	}
	// Arguments that do not decode into the task's type.
	bad := bus.NewMessage([]byte(`{"phone": 42`))
	bad.Headers[bus.HeaderTask] = "sms.known"
	if err := b.Publish(ctx, q, bad); err != nil {
		t.Fatal(err)
	}
	dl = deadLetter(t, b, q)
	if dl.ID != bad.ID || !strings.Contains(dl.Headers.Get(bus.HeaderError), "do not decode") {
		t.Fatalf("dead letter for bad arguments: %s %v", dl.ID, dl.Headers)
	}
	if s := wait(t, store, bad.ID); s.Status != task.Failure || !strings.Contains(s.Error, "do not decode") {
		t.Fatalf("state of bad arguments = %+v", s)
	}
}

func testCountdown(t *testing.T, open backend) {
	q := queue(t)
	later := task.Define[sms]("sms.later", task.OnQueue(q))
	ctx := context.Background()
	countdown := 1500 * time.Millisecond
	start := time.Now()
	producer := open(t)
	id, err := later.Apply(ctx, producer, sms{Code: "654321"}, task.Countdown(countdown))
	if err != nil {
		t.Fatal(err)
	}

	// A first worker receives the task early, hands it back, and stops
	// before the countdown ends.
	first, err := task.NewWorker(open(t), task.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var early atomic.Int32
	task.Handle(first, later, func(context.Context, sms) error { early.Add(1); return nil })
	stop := run(t, first)
	time.Sleep(300 * time.Millisecond)
	stop()
	if early.Load() != 0 {
		t.Fatal("the task ran before its countdown")
	}

	// A second worker, started later, runs it once, on its first attempt.
	store := task.NewMemoryStore()
	second, err := task.NewWorker(open(t), task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	var ranAt atomic.Int64
	task.Handle(second, later, func(ctx context.Context, s sms) error {
		runs.Add(1)
		ranAt.Store(time.Now().UnixNano())
		return nil
	})
	run(t, second)
	s := wait(t, store, id)
	if s.Status != task.Success || s.Attempt != 1 {
		t.Fatalf("state %+v, want SUCCESS on attempt 1", s)
	}
	if ran := time.Unix(0, ranAt.Load()); ran.Before(start.Add(countdown)) {
		t.Fatalf("ran %v after enqueueing, before its countdown of %v", ran.Sub(start), countdown)
	}
	time.Sleep(300 * time.Millisecond)
	if runs.Load() != 1 {
		t.Fatalf("ran %d times, want once", runs.Load())
	}
}

func testExpired(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	stale := task.Define[sms]("sms.stale", task.OnQueue(q))
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	task.Handle(w, stale, func(context.Context, sms) error { runs.Add(1); return nil })
	id, err := stale.Apply(context.Background(), b, sms{}, task.Expires(time.Now().Add(-time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	s := wait(t, store, id)
	if s.Status != task.Revoked || !strings.Contains(s.Error, "expired") || runs.Load() != 0 {
		t.Fatalf("state %+v, %d runs; want FAILURE (expired) without running", s, runs.Load())
	}
}

func testTimeLimit(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	slow := task.Define[sms]("sms.slow", task.OnQueue(q), task.TimeLimit(100*time.Millisecond), task.MaxRetries(0))
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	task.Handle(w, slow, func(ctx context.Context, _ sms) error {
		<-ctx.Done()
		return ctx.Err()
	})
	run(t, w)
	id, err := slow.Delay(context.Background(), b, sms{})
	if err != nil {
		t.Fatal(err)
	}
	if s := wait(t, store, id); s.Status != task.Failure || !strings.Contains(s.Error, "deadline") {
		t.Fatalf("state %+v, want FAILURE from the time limit", s)
	}
}

func testTrace(t *testing.T, open backend) {
	b := open(t)
	q := queue(t)
	traced := task.Define[sms]("sms.traced", task.OnQueue(q))
	w, err := task.NewWorker(b, task.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	task.Handle(w, traced, func(ctx context.Context, _ sms) error {
		tp, _ := task.TraceParent(ctx)
		got <- tp
		return nil
	})
	run(t, w)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := task.WithTraceParent(context.Background(), tp, "")
	if _, err := traced.Delay(ctx, b, sms{}); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != tp {
			t.Fatalf("handler saw traceparent %q, want %q", g, tp)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("task did not run")
	}
}

func TestRateLimit(t *testing.T) {
	b := memory.New(memory.Options{})
	t.Cleanup(func() { b.Close() }) // after the worker stops
	limited := task.Define[int]("limited", task.RateLimit(20, 1))
	w, err := task.NewWorker(b, task.WorkerConfig{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	done := make(chan struct{})
	task.Handle(w, limited, func(context.Context, int) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 6 {
			close(done)
		}
		return nil
	})
	for i := range 6 {
		limited.Delay(context.Background(), b, i)
	}
	run(t, w)
	<-done
	// Six runs at 20/s with no burst cannot fit in less than 5 intervals.
	if span := times[5].Sub(times[0]); span < 200*time.Millisecond {
		t.Fatalf("6 runs took %v, want at least 250ms at 20/s", span)
	}
}

func TestDefinitionErrors(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	bad := task.Define[int]("", task.OnQueue(""), task.MaxRetries(-5), task.TimeLimit(-1))
	_, err := bad.Delay(context.Background(), b, 1)
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("Delay of a bad definition = %v, want 4 problems at once", err)
	}
	unencodable := task.Define[chan int]("chan")
	if _, err := unencodable.Delay(context.Background(), b, make(chan int)); err == nil {
		t.Fatal("Delay with arguments that cannot be encoded succeeded")
	}
}

func TestDelayMany(t *testing.T) {
	b := memory.New(memory.Options{})
	t.Cleanup(func() { b.Close() })
	square := task.Define[int]("math.square")
	ids, err := square.DelayMany(context.Background(), b, []int{1, 2, 3})
	if err != nil || len(ids) != 3 || ids[0] == ids[1] {
		t.Fatalf("DelayMany = %v, %v; want 3 distinct ids", ids, err)
	}
	store := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	task.HandleResult(w, square, func(_ context.Context, n int) (int, error) { return n * n, nil })
	run(t, w)
	for i, id := range ids {
		var got int
		if s := wait(t, store, id); s.Decode(&got) != nil || got != (i+1)*(i+1) {
			t.Fatalf("task %d: %+v, want %d", i, s, (i+1)*(i+1))
		}
	}
	if _, err := square.DelayMany(context.Background(), b, []int{1, 2}, task.WithID("same")); !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("DelayMany with one id for two tasks = %v, want ErrBadConfig", err)
	}
}
