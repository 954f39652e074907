// Command celery-comparison measures how fast a real Celery worker and
// omnibus's workers drain the same preloaded queue of no-op tasks, on the
// same broker, in one run. See README.md for the method.
//
//	go run ./comparisons/celery -n 20000 -brokers rabbitmq,redis -out comparisons/celery/results
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	_ "github.com/omnibus-mq/omnibus/adapters/kombu"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/celery"
	"github.com/omnibus-mq/omnibus/task"
)

const noopTask = "bench.noop"

// worker is one contender: kind is celery-prefork, celery-threads,
// celery-solo, go-celery (celery.Worker) or go-task (task.Worker).
type worker struct {
	Kind        string `json:"kind"`
	Concurrency int    `json:"concurrency"`
	// Prefetch of the Go workers: the most unacknowledged tasks held.
	Prefetch int `json:"prefetch,omitempty"`
	// Multiplier is a Celery worker's worker_prefetch_multiplier; zero
	// leaves Celery's default, 4 per process or thread.
	Multiplier int `json:"prefetch_multiplier,omitempty"`
}

func (w worker) String() string {
	s := fmt.Sprintf("%s -c %d", w.Kind, w.Concurrency)
	if w.Prefetch > 0 {
		s += fmt.Sprintf(" prefetch %d", w.Prefetch)
	}
	if w.Multiplier > 0 {
		s += fmt.Sprintf(" prefetch_multiplier %d", w.Multiplier)
	}
	return s
}

type result struct {
	Broker    string  `json:"broker"`
	Worker    worker  `json:"worker"`
	Tasks     int     `json:"tasks"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"tasks_per_second"`
	PerMinute float64 `json:"tasks_per_minute"`
	// Load averages (1 minute) before preloading and after draining.
	LoadBefore float64 `json:"load1_before"`
	LoadAfter  float64 `json:"load1_after"`
	Error      string  `json:"error,omitempty"`
}

type config struct {
	n                int
	python           string
	amqpURL, redis   string
	brokers, workers string
	out              string
	timeout          time.Duration
	cpuProfile       string
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 20000, "tasks preloaded per run")
	flag.StringVar(&c.python, "python", ".venv/bin/python", "Python with celery installed (make venv)")
	flag.StringVar(&c.amqpURL, "amqp", env("OMNIBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
	flag.StringVar(&c.redis, "redis", env("OMNIBUS_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
	flag.StringVar(&c.brokers, "brokers", "rabbitmq,redis", "brokers to run on")
	flag.StringVar(&c.workers, "workers", "celery-prefork:2,celery-threads:2,celery-solo:1,celery-solo:1:64,go-celery:2:8,go-celery:16:256,go-task:2:8",
		"contenders, kind:concurrency[:prefetch]; a Celery worker's third field is its worker_prefetch_multiplier")
	flag.StringVar(&c.out, "out", "tools/comparisons/celery/results", "directory for results.json and results.md (a subdirectory per run)")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "longest a run may take to drain the queue")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the Go workers) to this file")
	flag.Parse()
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(c); err != nil {
		log.Print(err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func parseWorkers(s string) ([]worker, error) {
	var ws []worker
	for spec := range strings.SplitSeq(s, ",") {
		f := strings.Split(strings.TrimSpace(spec), ":")
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("worker %q: want kind:concurrency[:prefetch]", spec)
		}
		w := worker{Kind: f[0]}
		var err error
		if w.Concurrency, err = strconv.Atoi(f[1]); err != nil || w.Concurrency < 1 {
			return nil, fmt.Errorf("worker %q: bad concurrency", spec)
		}
		if len(f) == 3 {
			if w.Prefetch, err = strconv.Atoi(f[2]); err != nil || w.Prefetch < 1 {
				return nil, fmt.Errorf("worker %q: bad prefetch", spec)
			}
		}
		switch w.Kind {
		case "celery-prefork", "celery-threads", "celery-solo":
			// The third field is the prefetch multiplier.
			w.Multiplier, w.Prefetch = w.Prefetch, 0
		case "go-celery", "go-task":
			if w.Prefetch == 0 {
				w.Prefetch = w.Concurrency
			}
		default:
			return nil, fmt.Errorf("worker %q: unknown kind (celery-prefork, celery-threads, celery-solo, go-celery, go-task)", spec)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func run(c config) error {
	workers, err := parseWorkers(c.workers)
	if err != nil {
		return err
	}
	// The Celery workers run in the directory of noop_tasks.py.
	if strings.ContainsRune(c.python, filepath.Separator) {
		if c.python, err = filepath.Abs(c.python); err != nil {
			return err
		}
	}
	meta := machine(c)
	log.Printf("machine: %s", meta["summary"])
	var results []result
	for _, br := range strings.Split(c.brokers, ",") {
		for _, w := range workers {
			r := measure(c, br, w)
			if r.Error != "" {
				log.Printf("%-8s %-36s error: %s", br, w, r.Error)
			} else {
				log.Printf("%-8s %-36s %6d tasks in %7.2fs: %8.0f tasks/s %10.0f tasks/min (load %.2f -> %.2f)",
					br, w, r.Tasks, r.Seconds, r.PerSecond, r.PerMinute, r.LoadBefore, r.LoadAfter)
			}
			results = append(results, r)
		}
	}
	dir := filepath.Join(c.out, time.Now().UTC().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"machine": meta, "results": results}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	fmt.Fprintf(&md, "# Celery vs omnibus: draining %d preloaded no-op tasks\n\n%s\n\n", c.n, meta["summary"])
	fmt.Fprintf(&md, "| broker | worker | tasks | seconds | tasks/s | tasks/min | load1 before -> after |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(&md, "| %s | %s | | | | | error: %s |\n", r.Broker, r.Worker, r.Error)
			continue
		}
		fmt.Fprintf(&md, "| %s | %s | %d | %.2f | %.0f | %.0f | %.2f -> %.2f |\n",
			r.Broker, r.Worker, r.Tasks, r.Seconds, r.PerSecond, r.PerMinute, r.LoadBefore, r.LoadAfter)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s", dir)
	return nil
}

// machine describes where the run happened.
func machine(c config) map[string]string {
	m := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
	}
	if out, err := exec.Command(c.python, "-c", "import celery, kombu, sys; print(celery.__version__, kombu.__version__, sys.version.split()[0])").Output(); err == nil {
		f := strings.Fields(string(out))
		if len(f) == 3 {
			m["celery"], m["kombu"], m["python"] = f[0], f[1], f[2]
		}
	}
	if opt, err := redis.ParseURL(c.redis); err == nil {
		rdb := redis.NewClient(opt)
		if info, err := rdb.Info(context.Background(), "server").Result(); err == nil {
			for line := range strings.Lines(info) {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
					m["redis"] = v
				}
			}
		}
		rdb.Close()
	}
	if u, err := url.Parse(c.amqpURL); err == nil {
		pass, _ := u.User.Password()
		req, _ := http.NewRequest("GET", "http://"+u.Hostname()+":15672/api/overview", nil)
		req.SetBasicAuth(u.User.Username(), pass)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var o struct {
				V string `json:"rabbitmq_version"`
			}
			json.NewDecoder(resp.Body).Decode(&o)
			resp.Body.Close()
			m["rabbitmq"] = o.V
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m["summary"] = fmt.Sprintf("%s CPUs (%s), shared with other work; Go %s, Python %s, Celery %s, kombu %s, RabbitMQ %s, Redis %s",
		m["cpus"], m["cpu"], m["go"], m["python"], m["celery"], m["kombu"], m["rabbitmq"], m["redis"])
	return m
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// side is one broker as both sides reach it, with a way to read how many
// messages of the queue wait to be delivered.
type side struct {
	celeryURL, options, busURL string
	depth                      func(ctx context.Context) (int, error)
	cleanup                    func()
}

func newSide(c config, br, queue string) (*side, error) {
	switch br {
	case "rabbitmq":
		conn, err := amqp.Dial(c.amqpURL)
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err != nil {
			conn.Close()
			return nil, err
		}
		return &side{
			celeryURL: c.amqpURL,
			busURL:    c.amqpURL + "?topology=queue",
			depth: func(context.Context) (int, error) {
				q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
				return q.Messages, err
			},
			cleanup: func() {
				ch.QueueDelete(queue, false, false, false)
				ch.QueueDelete(queue+".dlq", false, false, false)
				ch.ExchangeDelete(queue, false, false)
				conn.Close()
			},
		}, nil
	case "redis":
		opt, err := redis.ParseURL(c.redis)
		if err != nil {
			return nil, err
		}
		rdb := redis.NewClient(opt)
		prefix := "omnibus-bench-" + randomSuffix() + ":"
		u, _ := url.Parse(c.redis)
		u.Scheme = "kombu+" + u.Scheme
		u.RawQuery = url.Values{"global_keyprefix": {prefix}}.Encode()
		opts, _ := json.Marshal(map[string]any{"global_keyprefix": prefix})
		return &side{
			celeryURL: c.redis,
			options:   string(opts),
			busURL:    u.String(),
			depth: func(ctx context.Context) (int, error) {
				n, err := rdb.LLen(ctx, prefix+queue).Result()
				return int(n), err
			},
			cleanup: func() {
				ctx := context.Background()
				iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
				for iter.Next(ctx) {
					rdb.Del(ctx, iter.Val())
				}
				rdb.Close()
			},
		}, nil
	}
	return nil, fmt.Errorf("unknown broker %q (rabbitmq, redis)", br)
}

type noArgs struct{}

// measure preloads a fresh queue with c.n no-op tasks, starts w on it and
// times the drain: from the last look at a full queue to the first at an
// empty one, looking every 10ms.
func measure(c config, br string, w worker) result {
	r := result{Broker: br, Worker: w, Tasks: c.n}
	fail := func(err error) result { r.Error = err.Error(); return r }
	queue := "omnibus-bench-" + randomSuffix()
	s, err := newSide(c, br, queue)
	if err != nil {
		return fail(err)
	}
	defer s.cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	b, err := bus.Open(ctx, s.busURL)
	if err != nil {
		return fail(err)
	}
	defer b.Close()

	r.LoadBefore = load1()
	native := task.Define[noArgs](noopTask, task.OnQueue(queue))
	const batch = 1000
	for sent := 0; sent < c.n; sent += batch {
		k := min(batch, c.n-sent)
		if w.Kind == "go-task" {
			if _, err := native.DelayMany(ctx, b, make([]noArgs, k)); err != nil {
				return fail(err)
			}
			continue
		}
		msgs := make([]*bus.Message, k)
		for i := range msgs {
			if msgs[i], err = celery.Encode(celery.Request{Task: noopTask}); err != nil {
				return fail(err)
			}
		}
		if err := b.Publish(ctx, queue, msgs...); err != nil {
			return fail(err)
		}
	}
	if d, err := s.depth(ctx); err != nil || d != c.n {
		return fail(fmt.Errorf("preloaded queue holds %d tasks (%v), want %d", d, err, c.n))
	}

	var ran atomic.Int64
	stop, err := start(ctx, c, s, b, queue, w, &ran)
	if err != nil {
		return fail(err)
	}
	goWorker := strings.HasPrefix(w.Kind, "go-")
	lastFull, end := time.Now(), time.Time{}
	for end.IsZero() {
		at := time.Now()
		d, err := s.depth(ctx)
		if err != nil {
			stop()
			return fail(err)
		}
		switch {
		case d >= c.n:
			lastFull = at
		case d == 0 && (!goWorker || ran.Load() >= int64(c.n)):
			// A Go worker counts its runs, so the end is when the last
			// one has run; a Celery worker's end is when the queue is
			// empty, with at most its prefetch window still running.
			end = at
		}
		select {
		case <-ctx.Done():
			stop()
			return fail(fmt.Errorf("%d of %d tasks left after %v", d, c.n, c.timeout))
		case <-time.After(10 * time.Millisecond):
		}
	}
	r.Seconds = end.Sub(lastFull).Seconds()
	r.PerSecond = float64(c.n) / r.Seconds
	r.PerMinute = r.PerSecond * 60
	r.LoadAfter = load1()
	if err := stop(); err != nil {
		return fail(err)
	}
	return r
}

// start runs w on queue and returns the function that stops it.
func start(ctx context.Context, c config, s *side, b bus.Broker, queue string, w worker, ran *atomic.Int64) (func() error, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch w.Kind {
	case "go-celery":
		cw, err := celery.NewWorker(b, queue, celery.Concurrency(w.Concurrency), celery.Logger(quiet),
			celery.Subscribe(bus.SubscribeOptions{Prefetch: w.Prefetch}))
		if err != nil {
			return nil, err
		}
		cw.Handle(noopTask, func(context.Context, celery.Request) error { ran.Add(1); return nil })
		return goRun(ctx, cw.Run), nil
	case "go-task":
		tw, err := task.NewWorker(b, task.WorkerConfig{Queues: []string{queue}, Concurrency: w.Concurrency,
			Prefetch: w.Prefetch - w.Concurrency, Logger: quiet})
		if err != nil {
			return nil, err
		}
		task.Handle(tw, task.Define[noArgs](noopTask, task.OnQueue(queue)), func(context.Context, noArgs) error { ran.Add(1); return nil })
		return goRun(ctx, tw.Run), nil
	}
	pool := strings.TrimPrefix(w.Kind, "celery-")
	cmd := exec.Command(c.python, "-m", "celery", "-A", "noop_tasks", "worker", "-P", pool, "-c", strconv.Itoa(w.Concurrency),
		"-Q", queue, "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", "bench-"+queue+"@%h")
	dir, err := filepath.Abs("tools/comparisons/celery")
	if err != nil {
		return nil, err
	}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CELERY_BROKER_URL="+s.celeryURL, "CELERY_BROKER_TRANSPORT_OPTIONS="+s.options)
	if w.Multiplier > 0 {
		cmd.Env = append(cmd.Env, "CELERY_WORKER_PREFETCH_MULTIPLIER="+strconv.Itoa(w.Multiplier))
	}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return func() error {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if strings.Contains(logs.String(), "ERROR") {
			return errors.New("the Celery worker logged an error:\n" + logs.String())
		}
		return nil
	}, nil
}

func goRun(ctx context.Context, run func(context.Context) error) func() error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return func() error { cancel(); return <-done }
}
