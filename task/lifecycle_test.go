package task_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

func TestNewWorkerReportsEveryProblem(t *testing.T) {
	_, err := task.NewWorker(nil, task.WorkerConfig{Concurrency: -1, Prefetch: -2, Queues: []string{""}, ResultTTL: -time.Second})
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("NewWorker = %v, want a ConfigError with 5 problems", err)
	}
}

func TestHandleTwiceIsAnError(t *testing.T) {
	w, err := task.NewWorker(memory.New(memory.Options{}), task.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	greet := task.Define[string]("greet")
	if err := task.Handle(w, greet, func(context.Context, string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	err = task.Handle(w, task.Define[int]("greet"), func(context.Context, int) error { return nil })
	if !errors.Is(err, task.ErrDuplicateTask) {
		t.Fatalf("second Handle = %v, want ErrDuplicateTask", err)
	}
}

func TestShutdownStopsRun(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	w, err := task.NewWorker(b, task.WorkerConfig{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 1)
	slow := task.Define[string]("slow", task.OnQueue("lifecycle"))
	task.Handle(w, slow, func(_ context.Context, s string) error {
		time.Sleep(200 * time.Millisecond)
		ran <- s
		return nil
	})
	if _, err := slow.Delay(context.Background(), b, "finish me"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	time.Sleep(100 * time.Millisecond) // the task is running
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	default:
		t.Fatal("Shutdown returned before Run")
	}
	select {
	case s := <-ran:
		if s != "finish me" {
			t.Fatalf("ran %q", s)
		}
	default:
		t.Fatal("the running task did not finish before Shutdown returned")
	}
	if err := w.Run(context.Background()); !errors.Is(err, task.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	if err := task.Handle(w, task.Define[int]("late"), func(context.Context, int) error { return nil }); !errors.Is(err, task.ErrRunning) {
		t.Fatalf("Handle after Run = %v, want ErrRunning", err)
	}
}
