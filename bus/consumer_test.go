package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

// runConsumer starts a consumer and returns a function that stops it and
// returns Run's result.
func runConsumer(t *testing.T, sub bus.Subscriber, cfg bus.ConsumerConfig, h bus.Handler) func() error {
	t.Helper()
	c, err := bus.NewConsumer(sub, cfg, h)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.Run(ctx) }()
	return func() error { cancel(); return <-res }
}

func receive(t *testing.T, sub bus.Subscription) *bus.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	return d.Message()
}

func fastRetry(topic string) bus.ConsumerConfig {
	return bus.ConsumerConfig{Topic: topic, Backoff: func(int) time.Duration { return 0 },
		Subscribe: bus.SubscribeOptions{MaxAttempts: 3}}
}

func TestConsumerPanicIsAFailure(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	dlq, _ := b.Subscribe(ctx, "jobs.dlq", bus.SubscribeOptions{})
	var calls atomic.Int32
	stop := runConsumer(t, b, fastRetry("jobs"), func(context.Context, *bus.Message) error {
		calls.Add(1)
		panic("nil map write")
	})
	defer stop()
	b.Publish(ctx, "jobs", bus.NewMessage([]byte("x")))
	m := receive(t, dlq)
	if got := m.Headers.Get(bus.HeaderError); !strings.Contains(got, "panicked: nil map write") {
		t.Fatalf("dead letter error header = %q, want the panic", got)
	}
	if calls.Load() != 3 {
		t.Fatalf("handler ran %d times, want 3", calls.Load())
	}
}

func TestConsumerOutcomes(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	dlq, _ := b.Subscribe(ctx, "out.dlq", bus.SubscribeOptions{})
	var calls atomic.Int32
	stop := runConsumer(t, b, fastRetry("out"), func(_ context.Context, m *bus.Message) error {
		calls.Add(1)
		switch string(m.Body) {
		case "drop":
			return bus.Drop(errors.New("stale"))
		case "noretry":
			return bus.NoRetry(errors.New("bad phone number"))
		}
		return nil
	})
	b.Publish(ctx, "out", bus.NewMessage([]byte("drop")), bus.NewMessage([]byte("noretry")))
	m := receive(t, dlq)
	if string(m.Body) != "noretry" || m.Headers.Get(bus.HeaderAttempts) != "1" ||
		!strings.Contains(m.Headers.Get(bus.HeaderError), "bad phone number") {
		t.Fatalf("dead letter %q headers %v, want the NoRetry message after 1 attempt", m.Body, m.Headers)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := b.GroupStats("out", bus.DefaultGroup); st != (memory.Stats{}) {
		t.Fatalf("group still holds %+v; the dropped message should be gone", st)
	}
	if calls.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", calls.Load())
	}
}

func TestConsumerRetryAfter(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	var first atomic.Int64
	done := make(chan time.Duration, 1)
	stop := runConsumer(t, b, bus.ConsumerConfig{Topic: "ra", Backoff: func(int) time.Duration { return time.Hour }},
		func(_ context.Context, m *bus.Message) error {
			if m.Attempt == 1 {
				first.Store(time.Now().UnixNano())
				return bus.RetryAfter(errors.New("rate limited"), 200*time.Millisecond)
			}
			done <- time.Since(time.Unix(0, first.Load()))
			return nil
		})
	defer stop()
	b.Publish(ctx, "ra", bus.NewMessage([]byte("x")))
	select {
	case waited := <-done:
		if waited < 100*time.Millisecond {
			t.Fatalf("retried after %v, want the RetryAfter delay of 200ms", waited)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RetryAfter's delay was not used (the backoff says an hour)")
	}
}

func TestConsumerHandlerTimeout(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	dlq, _ := b.Subscribe(ctx, "slow.dlq", bus.SubscribeOptions{})
	cfg := fastRetry("slow")
	cfg.HandlerTimeout = 50 * time.Millisecond
	cfg.Subscribe.MaxAttempts = 1
	stop := runConsumer(t, b, cfg, func(ctx context.Context, _ *bus.Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	defer stop()
	b.Publish(ctx, "slow", bus.NewMessage([]byte("x")))
	m := receive(t, dlq)
	if !strings.Contains(m.Headers.Get(bus.HeaderError), "deadline exceeded") {
		t.Fatalf("dead letter error = %q, want the time limit", m.Headers.Get(bus.HeaderError))
	}
}

func TestConsumerShutdownTimeoutGivesMessageBack(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ctx := context.Background()
	started := make(chan struct{})
	cfg := bus.ConsumerConfig{Topic: "stuck", ShutdownTimeout: 100 * time.Millisecond}
	stop := runConsumer(t, b, cfg, func(ctx context.Context, _ *bus.Message) error {
		close(started)
		<-ctx.Done() // gives up only when the shutdown cancels it
		return ctx.Err()
	})
	b.Publish(ctx, "stuck", bus.NewMessage([]byte("long job")))
	<-started
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("shutdown took %v with a 100ms timeout", took)
	}
	// The unfinished message is back with the broker, not lost.
	sub, _ := b.Subscribe(ctx, "stuck", bus.SubscribeOptions{})
	if m := receive(t, sub); string(m.Body) != "long job" || m.Attempt != 2 {
		t.Fatalf("got %q attempt %d, want the unfinished job on attempt 2", m.Body, m.Attempt)
	}
}

func TestConsumerShutdownMethod(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "s"}, func(context.Context, *bus.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- c.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestConsumerRunFailsOnClosedBroker(t *testing.T) {
	b := memory.New(memory.Options{})
	b.Close()
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "x"}, func(context.Context, *bus.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Run on a closed broker: %v, want ErrClosed", err)
	}
}

func TestConsumerEndsWhenBrokerCloses(t *testing.T) {
	b := memory.New(memory.Options{})
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "x", Concurrency: 3}, func(context.Context, *bus.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- c.Run(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	select {
	case err := <-res:
		if !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("Run = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the broker closed")
	}
}

func TestConsumerConfigValidate(t *testing.T) {
	_, err := bus.NewConsumer(nil, bus.ConsumerConfig{Concurrency: -1, HandlerTimeout: -1,
		Subscribe: bus.SubscribeOptions{Prefetch: -2}}, nil)
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) {
		t.Fatalf("NewConsumer = %v, want a ConfigError", err)
	}
	if len(ce.Problems) != 4 {
		t.Fatalf("reported %d problems (%v), want all 4 at once", len(ce.Problems), err)
	}
	for _, want := range []string{"Topic", "Concurrency", "Prefetch", "HandlerTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// A consumer stopped before its subscription was made ran nothing and
// returns nil, as after any shutdown.
func TestConsumerCancelledBeforeSubscribing(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "early"}, func(context.Context, *bus.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
}

// Ready closes once Run has subscribed: a message published then reaches
// the handler. When Run fails before subscribing, Ready stays open and
// Done closes.
func TestConsumerReady(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	got := make(chan string, 1)
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "ready", Subscribe: bus.SubscribeOptions{Group: "g"}},
		func(_ context.Context, m *bus.Message) error { got <- string(m.Body); return nil })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Ready():
		t.Fatal("Ready before Run")
	default:
	}
	go c.Run(context.Background())
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("Ready did not close after Run")
	}
	if err := b.Publish(context.Background(), "ready", bus.NewMessage([]byte("after ready"))); err != nil {
		t.Fatal(err)
	}
	if body := <-got; body != "after ready" {
		t.Fatalf("handler got %q", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	closed := memory.New(memory.Options{})
	closed.Close()
	c, err = bus.NewConsumer(closed, bus.ConsumerConfig{Topic: "ready"}, func(context.Context, *bus.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("Run on a closed broker succeeded")
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done open after Run returned")
	}
	select {
	case <-c.Ready():
		t.Fatal("Ready closed though Run never subscribed")
	default:
	}
}
