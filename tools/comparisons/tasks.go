package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/handlers/sms"
	"github.com/omnibus-mq/omnibus/task"
	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

// TaskResult is one worker process draining SMS send tasks.
type TaskResult struct {
	Concurrency int     `json:"concurrency"`
	Tasks       int     `json:"tasks"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"tasks_per_s"`
	Error       string  `json:"error,omitempty"`
}

// smsTasks enqueues n SMS send tasks (sms.Message arguments, the SMS
// service's handler with a provider that accepts at once) and times one
// task.Worker with the given concurrency running all of them: the
// throughput of the task layer itself, per worker process.
func smsTasks(ctx context.Context, rawURL string, n, concurrency int) TaskResult {
	res := TaskResult{Concurrency: concurrency, Tasks: n}
	fail := func(err error) TaskResult { res.Error = err.Error(); return res }
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, rawURL)
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	queue := "omnibus-compare-sms-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	defer func() { _ = bench.Cleanup(context.WithoutCancel(ctx), rawURL, queue, bus.DefaultGroup) }()
	send := task.Define[sms.Message]("sms.send", task.OnQueue(queue))
	args := make([]sms.Message, 500)
	for i := range args {
		args[i] = sms.Message{Phone: "+15550100" + strconv.Itoa(i%10), Text: "Your code is 123456"}
	}
	var done atomic.Int64
	all := make(chan struct{})
	accept := sms.ProviderFunc(func(context.Context, string, string) error {
		if done.Add(1) == int64(n) {
			close(all)
		}
		return nil
	})
	w, err := task.NewWorker(b, task.WorkerConfig{Concurrency: concurrency, Prefetch: 4 * concurrency})
	if err != nil {
		return fail(err)
	}
	task.Handle(w, send, sms.Handler(accept))
	// Every adapter keeps what was published before the default group
	// subscribed.
	for sent := 0; sent < n; sent += len(args) {
		if _, err := send.DelayMany(ctx, b, args[:min(len(args), n-sent)]); err != nil {
			return fail(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- w.Run(runCtx) }()
	select {
	case <-all:
	case err := <-errc:
		return fail(fmt.Errorf("worker stopped: %v", err))
	case <-time.After(5 * time.Minute):
		stop()
		<-errc
		return fail(fmt.Errorf("%d of %d tasks ran in 5 minutes", done.Load(), n))
	}
	res.Seconds = time.Since(start).Seconds()
	res.PerSecond = float64(n) / res.Seconds
	stop()
	if err := <-errc; err != nil {
		res.Error = err.Error()
	}
	return res
}

func writeTasks(w io.Writer, res []TaskResult) {
	fmt.Fprintf(w, "\n## Task workload: SMS send tasks per worker process\n\n")
	fmt.Fprintln(w, "Tasks enqueued first (DelayMany, 500 per call), then one task.Worker runs them through the SMS handler with a provider that accepts at once; time from the worker's start to the last task's end.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| worker concurrency | tasks | seconds | tasks/s | tasks/min |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range res {
		e := ""
		if r.Error != "" {
			e = " (error: " + r.Error + ")"
		}
		fmt.Fprintf(w, "| %d%s | %d | %.2f | %s | %s |\n", r.Concurrency, e, r.Tasks, r.Seconds, rate(r.PerSecond), rate(60*r.PerSecond))
	}
}
