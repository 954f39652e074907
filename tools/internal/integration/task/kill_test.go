package task_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

// The worker process of TestDelayedTaskSurvivesKilledWorker: the test
// binary runs itself with these variables set, and TestMain becomes a
// worker that runs until it is killed.
const (
	envWorkerURL   = "OMNIBUS_TEST_WORKER_URL"
	envWorkerQueue = "OMNIBUS_TEST_WORKER_QUEUE"
)

var delayed = func(queue string) *task.Task[sms] { return task.Define[sms]("sms.delayed", task.OnQueue(queue)) }

func TestMain(m *testing.M) {
	if url := os.Getenv(envWorkerURL); url != "" {
		os.Exit(workerProcess(url, os.Getenv(envWorkerQueue)))
	}
	os.Exit(m.Run())
}

func workerProcess(url, queue string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	b, err := bus.Open(ctx, url)
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	defer b.Close()
	w, err := task.NewWorker(b, task.WorkerConfig{})
	if err != nil {
		fmt.Println("worker:", err)
		return 1
	}
	task.Handle(w, delayed(queue), func(context.Context, sms) error {
		fmt.Println("ran") // must not happen: the process dies before the ETA
		return nil
	})
	fmt.Println("started")
	if err := w.Run(ctx); err != nil {
		fmt.Println("run:", err)
		return 1
	}
	return 0
}

// TestDelayedTaskSurvivesKilledWorker enqueues a countdown task, lets a
// worker process receive it, kills that process with SIGKILL before the
// countdown ends, and checks that a worker started afterwards runs the
// task once, on time.
func TestDelayedTaskSurvivesKilledWorker(t *testing.T) {
	urls := map[string]func(t *testing.T) string{
		"rabbitmq":    func(t *testing.T) string { return brokerURL(t, "rabbitmq") },
		"redisstream": func(t *testing.T) string { return brokerURL(t, "redisstream") },
		"kafka":       func(t *testing.T) string { return brokerURL(t, "kafka") },
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			url := url(t)
			q := queue(t)
			producer := open(t, url)
			const countdown = 3 * time.Second
			start := time.Now()
			id, err := delayed(q).Apply(context.Background(), producer, sms{Code: "424242"}, task.Countdown(countdown))
			if err != nil {
				t.Fatal(err)
			}

			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), envWorkerURL+"="+url, envWorkerQueue+"="+q)
			out, _ := child.StdoutPipe()
			child.Stderr = os.Stderr
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(out)
			if !lines.Scan() || lines.Text() != "started" {
				child.Process.Kill()
				child.Wait()
				t.Fatalf("worker process said %q", lines.Text())
			}
			// Let it take the task (and hand it back) before it dies.
			time.Sleep(time.Second)
			if err := child.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var rest []string
			for lines.Scan() {
				rest = append(rest, lines.Text())
			}
			child.Wait()
			if len(rest) > 0 {
				t.Fatalf("the killed worker printed %q: it ran the task before its countdown", rest)
			}

			store := task.NewMemoryStore()
			w, err := task.NewWorker(open(t, url), task.WorkerConfig{Results: store})
			if err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int32
			var ranAfter atomic.Int64
			task.Handle(w, delayed(q), func(context.Context, sms) error {
				runs.Add(1)
				ranAfter.Store(int64(time.Since(start)))
				return nil
			})
			run(t, w)
			if s := wait(t, store, id); s.Status != task.Success {
				t.Fatalf("state %+v, want SUCCESS", s)
			}
			if after := time.Duration(ranAfter.Load()); after < countdown {
				t.Fatalf("ran %v after enqueueing, before its countdown of %v", after, countdown)
			}
			time.Sleep(500 * time.Millisecond)
			if runs.Load() != 1 {
				t.Fatalf("ran %d times, want once", runs.Load())
			}
		})
	}
}
