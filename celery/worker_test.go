package celery_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/celery"
	"github.com/omnibus-mq/omnibus/task"
)

type memStore struct {
	mu      sync.Mutex
	results []celery.Result
}

func (s *memStore) StoreResult(_ context.Context, r celery.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
	return nil
}

func (s *memStore) statuses(id string) []task.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []task.Status
	for _, r := range s.results {
		if r.TaskID == id {
			out = append(out, r.Status)
		}
	}
	return out
}

// smsTask is the name the Python side of the interop tests registers.
const smsTask = "tasks.send_sms_code"

var quiet = slog.New(slog.DiscardHandler)

// startWorker runs a worker on an in-process broker until the test ends.
func startWorker(t *testing.T, opts ...celery.Option) (*memory.Broker, *celery.Worker, *memStore) {
	t.Helper()
	b := memory.New(memory.Options{})
	t.Cleanup(func() { b.Close() })
	store := &memStore{}
	opts = append([]celery.Option{celery.Logger(quiet), celery.Results(store), celery.RetryBackoff(func(int) time.Duration { return 10 * time.Millisecond })}, opts...)
	w, err := celery.NewWorker(b, "celery", opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return b, w, store
}

func deadLettered(t *testing.T, b bus.Broker) *bus.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, "celery.dlq", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("nothing dead-lettered: %v", err)
	}
	d.Ack(ctx)
	return d.Message()
}

func TestWorkerRetriesThenSucceeds(t *testing.T) {
	b, w, store := startWorker(t)
	runs := make(chan celery.Request, 5)
	w.HandleResult(smsTask, func(_ context.Context, r celery.Request) (any, error) {
		runs <- r
		if r.Retries < 2 {
			return nil, errors.New("gateway busy")
		}
		return "ok", nil
	})
	ctx := context.Background()
	id, err := celery.Delay(ctx, b, "celery", smsTask, "+1", "2")
	if err != nil {
		t.Fatal(err)
	}
	for want := range 3 {
		select {
		case r := <-runs:
			if r.ID != id || r.Retries != want {
				t.Fatalf("run %d: id %s retries %d", want, r.ID, r.Retries)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d did not come", want)
		}
	}
	waitStatuses(t, store, id, []task.Status{celery.StateRetry, celery.StateRetry, celery.StateSuccess})
}

func TestWorkerGivesUpAfterMaxRetries(t *testing.T) {
	b, w, store := startWorker(t, celery.MaxRetries(1))
	w.Handle(smsTask, func(context.Context, celery.Request) error { panic("boom") })
	id, err := celery.Delay(context.Background(), b, "celery", smsTask)
	if err != nil {
		t.Fatal(err)
	}
	m := deadLettered(t, b)
	if m.Headers["id"] != id || m.Headers["retries"] != "1" {
		t.Fatalf("dead-lettered %v", m.Headers)
	}
	waitStatuses(t, store, id, []task.Status{celery.StateRetry, celery.StateFailure})
}

func TestWorkerETA(t *testing.T) {
	b, w, _ := startWorker(t)
	ran := make(chan time.Time, 1)
	w.Handle(smsTask, func(context.Context, celery.Request) error { ran <- time.Now(); return nil })
	r, _ := celery.NewRequest(smsTask, nil, nil)
	r.ETA = time.Now().Add(300 * time.Millisecond)
	if _, err := celery.Apply(context.Background(), b, "celery", r); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ran:
		if at.Before(r.ETA) {
			t.Fatalf("ran at %v, before the eta %v", at, r.ETA)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the eta task did not run")
	}
}

func TestWorkerDiscardsExpired(t *testing.T) {
	b, w, store := startWorker(t)
	w.Handle(smsTask, func(context.Context, celery.Request) error { t.Error("an expired task ran"); return nil })
	r, _ := celery.NewRequest(smsTask, nil, nil)
	r.Expires = time.Now().Add(-time.Second)
	id, err := celery.Apply(context.Background(), b, "celery", r)
	if err != nil {
		t.Fatal(err)
	}
	waitStatuses(t, store, id, []task.Status{celery.StateRevoked})
}

func TestWorkerDeadLettersUnknownAndMalformed(t *testing.T) {
	b, _, _ := startWorker(t)
	ctx := context.Background()
	if _, err := celery.Delay(ctx, b, "celery", "tasks.nobody_knows"); err != nil {
		t.Fatal(err)
	}
	if m := deadLettered(t, b); m.Headers["task"] != "tasks.nobody_knows" || m.Headers[bus.HeaderError] == "" {
		t.Fatalf("dead-lettered %v", m.Headers)
	}
	if err := b.Publish(ctx, "celery", bus.NewMessage([]byte("not a task"))); err != nil {
		t.Fatal(err)
	}
	if m := deadLettered(t, b); string(m.Body) != "not a task" {
		t.Fatalf("dead-lettered %q", m.Body)
	}
}

func TestWorkerIgnoreResult(t *testing.T) {
	b, w, store := startWorker(t)
	ran := make(chan struct{}, 1)
	w.Handle(smsTask, func(context.Context, celery.Request) error { ran <- struct{}{}; return nil })
	r, _ := celery.NewRequest(smsTask, nil, nil)
	r.IgnoreResult = true
	id, err := celery.Apply(context.Background(), b, "celery", r)
	if err != nil {
		t.Fatal(err)
	}
	<-ran
	time.Sleep(50 * time.Millisecond)
	if s := store.statuses(id); len(s) != 0 {
		t.Fatalf("stored %v for a task that ignores its result", s)
	}
}

func TestNewWorkerValidates(t *testing.T) {
	_, err := celery.NewWorker(nil, "celery", celery.Concurrency(0), celery.RetryBackoff(nil))
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 || !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("got %v", err)
	}
}

func waitStatuses(t *testing.T, s *memStore, id string, want []task.Status) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.statuses(id)
		if len(got) == len(want) {
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("statuses %v, want %v", got, want)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
