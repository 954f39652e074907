package task_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/task"
)

// BenchmarkWorker measures tasks per second through one worker process:
// the tasks (small SMS arguments, a no-op handler) are enqueued first, in
// batches, then one worker runs them all; an op is one task.
//
//	go test -run '^$' -bench Worker -benchtime 20000x ./task/
//
// tasks/min is reported beside tasks/s to compare with the goal of a
// million tasks a minute per worker process.
func BenchmarkWorker(b *testing.B) {
	for _, name := range []string{"memory", "rabbitmq", "redisstream", "kafka"} {
		for _, conc := range []int{8, 64} {
			b.Run(name+"/c="+strconv.Itoa(conc), func(b *testing.B) { benchWorker(b, name, conc) })
		}
	}
}

func benchWorker(b *testing.B, backend string, concurrency int) {
	var url string
	if backend == "memory" {
		url = "mem://bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	} else {
		url = brokerURL(b, backend)
	}
	bk := open(b, url)
	q := "bench-tasks-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	noop := task.Define[sms]("sms.noop", task.OnQueue(q))
	ctx := context.Background()
	args := make([]sms, 500)
	for i := range args {
		args[i] = sms{Phone: "+15550100", Code: "123456"}
	}
	// Every backend keeps tasks published before the worker's group
	// exists for the default group.
	w, err := task.NewWorker(bk, task.WorkerConfig{Concurrency: concurrency, Prefetch: 4 * concurrency})
	if err != nil {
		b.Fatal(err)
	}
	var done atomic.Int64
	all := make(chan struct{})
	task.Handle(w, noop, func(context.Context, sms) error {
		if done.Add(1) == int64(b.N) {
			close(all)
		}
		return nil
	})
	for sent := 0; sent < b.N; sent += len(args) {
		if _, err := noop.DelayMany(ctx, bk, args[:min(len(args), b.N-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	runCtx, cancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() { res <- w.Run(runCtx) }()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d tasks ran in 5 minutes", done.Load(), b.N)
	}
	b.StopTimer()
	cancel()
	if err := <-res; err != nil {
		b.Fatal(err)
	}
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "tasks/s")
	b.ReportMetric(rate*60, "tasks/min")
}
