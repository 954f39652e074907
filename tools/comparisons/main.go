// Command comparisons runs the same workloads on one broker through the
// omnibus adapter, the broker's Go clients used directly and the
// watermill pub/sub, in one run, and writes the overhead ratios.
//
//	go run ./comparisons -broker redis            # or rabbitmq, kafka, all
//
// See comparisons/README.md for what each phase measures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	_ "github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/tools/internal/bench"
	"github.com/omnibus-mq/omnibus/tools/internal/clients"
)

// contender is one way of talking to a broker.
type contender struct {
	name   string // e.g. "amqp091-go"
	role   string // omnibus, raw or watermill
	open   func(context.Context, string) (bus.Broker, error)
	client *bench.Client
	// cleanup replaces bench.Cleanup for layouts other than the adapter's.
	cleanup func(ctx context.Context, url, topic, group string) error
}

type brokerPlan struct {
	name, env, def, prefix string
	contenders             []contender
}

func lib(adapter, path string) *bench.Client {
	return &bench.Client{Adapter: adapter, Library: path, LibraryVersion: bench.ModuleVersion(path)}
}

var plans = []brokerPlan{
	{name: "rabbitmq", env: "OMNIBUS_AMQP_URL", def: "amqp://guest:guest@127.0.0.1:5672/", contenders: []contender{
		{name: "omnibus", role: "omnibus", open: bus.Open},
		{name: "amqp091-go", role: "raw", open: clients.OpenAMQP,
			client: lib("raw client (comparisons/clients.AMQP)", "github.com/rabbitmq/amqp091-go")},
		{name: "watermill-amqp", role: "watermill", open: clients.OpenWatermillAMQP, cleanup: clients.CleanupWatermillAMQP,
			client: lib("watermill-amqp through adapters/watermill", "github.com/ThreeDotsLabs/watermill-amqp/v3")},
	}},
	{name: "redis", env: "OMNIBUS_REDIS_URL", def: "redis://127.0.0.1:6379/0", contenders: []contender{
		{name: "omnibus", role: "omnibus", open: bus.Open},
		{name: "go-redis", role: "raw", open: clients.OpenRedis,
			client: lib("raw client (comparisons/clients.Redis)", "github.com/redis/go-redis/v9")},
		{name: "watermill-redisstream", role: "watermill", open: clients.OpenWatermillRedis,
			client: lib("watermill-redisstream through adapters/watermill", "github.com/ThreeDotsLabs/watermill-redisstream")},
	}},
	{name: "kafka", env: "OMNIBUS_KAFKA_BROKERS", def: "127.0.0.1:9092", prefix: "kafka://", contenders: []contender{
		{name: "omnibus", role: "omnibus", open: bus.Open},
		{name: "kafka-go", role: "raw", open: clients.OpenKafkaGo,
			client: lib("raw client (comparisons/clients.KafkaGo)", "github.com/segmentio/kafka-go")},
		{name: "franz-go", role: "raw", open: clients.OpenFranz,
			client: lib("raw client (comparisons/clients.Franz)", "github.com/twmb/franz-go")},
		{name: "watermill-kafka", role: "watermill", open: clients.OpenWatermillKafka,
			client: lib("watermill-kafka (Sarama) through adapters/watermill", "github.com/ThreeDotsLabs/watermill-kafka/v3")},
	}},
	// watermill has no RocketMQ pub/sub.
	{name: "rocketmq", env: "OMNIBUS_ROCKETMQ_URL", def: "rocketmq://127.0.0.1:9876", contenders: []contender{
		{name: "omnibus", role: "omnibus", open: bus.Open},
		{name: "rocketmq-client-go", role: "raw", open: clients.OpenRocketMQ, cleanup: clients.CleanupRocketMQ,
			client: lib("raw client (comparisons/clients.RocketMQ)", "github.com/apache/rocketmq-client-go/v2")},
	}},
}

func (p brokerPlan) url() string {
	v := p.def
	if e := strings.TrimSpace(os.Getenv(p.env)); e != "" {
		v = e
	}
	return p.prefix + v
}

// config is what the command line sets.
type config struct {
	size       int
	messages   int
	maxPhase   time.Duration
	warmup     time.Duration
	duration   time.Duration
	reps       int
	out        string
	only       []string
	skipEngine bool
	note       string
	tasks      int
	taskConc   []int
	pipeOps    int
	pipeTime   time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "comparisons:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("comparisons", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "all", "rabbitmq, redis, kafka, rocketmq or all (comma-separated)")
	var c config
	fs.IntVar(&c.size, "size", 1024, "message body size in bytes")
	fs.IntVar(&c.messages, "messages", 100_000, "messages each publish phase sends at most")
	fs.DurationVar(&c.maxPhase, "phase-limit", 10*time.Second, "longest a publish phase runs")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "warm-up of each end-to-end repetition")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measurement of each end-to-end repetition")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of every end-to-end run")
	fs.StringVar(&c.out, "out", "tools/comparisons/results", "directory; each broker's files go to <out>/<broker>")
	fs.StringVar(&c.note, "note", "", "a note recorded in the results")
	clientsFlag := fs.String("clients", "", "comma-separated contender names to run (default: all of the broker's)")
	fs.BoolVar(&c.skipEngine, "phases-only", false, "run the publish and consume phases only, not the end-to-end runs")
	fs.IntVar(&c.tasks, "tasks", 20_000, "SMS send tasks each task run drains; 0 skips the task workload")
	taskConc := fs.String("task-concurrency", "8,64", "worker concurrencies of the task workload")
	fs.IntVar(&c.pipeOps, "pipeline-ops", 2000, "Redis only: sequential operations per pipeline mode; 0 skips it")
	fs.DurationVar(&c.pipeTime, "pipeline-time", 2*time.Second, "Redis only: throughput time per pipeline mode")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var probs []error
	for _, f := range strings.Split(*taskConc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			probs = append(probs, fmt.Errorf("-task-concurrency %q: want whole numbers of at least 1", *taskConc))
			break
		}
		c.taskConc = append(c.taskConc, n)
	}
	if *clientsFlag != "" {
		c.only = strings.Split(*clientsFlag, ",")
	}
	if c.size < bench.HeaderSize {
		probs = append(probs, fmt.Errorf("-size %d: want at least %d", c.size, bench.HeaderSize))
	}
	if c.messages < 1 || c.reps < 1 || c.duration <= 0 || c.maxPhase <= 0 {
		probs = append(probs, errors.New("-messages, -reps, -duration and -phase-limit must be positive"))
	}
	var chosen []brokerPlan
	for _, name := range strings.Split(*broker, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, p := range plans {
			if name == "all" || name == p.name {
				chosen, found = append(chosen, p), true
			}
		}
		if !found {
			probs = append(probs, fmt.Errorf("-broker %q: want rabbitmq, redis, kafka, rocketmq or all", name))
		}
	}
	if len(probs) > 0 {
		return &bus.ConfigError{Problems: probs}
	}
	var errs []error
	for _, p := range chosen {
		if err := compare(ctx, p, c, stdout, stderr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// Run is everything one broker's comparison wrote.
type Run struct {
	Broker    string        `json:"broker"`
	Command   string        `json:"command"`
	Note      string        `json:"note,omitempty"`
	Size      int           `json:"message_size"`
	Started   time.Time     `json:"started"`
	Finished  time.Time     `json:"finished"`
	Machine   bench.Machine `json:"machine"`
	LoadStart string        `json:"loadavg_start"`
	LoadEnd   string        `json:"loadavg_end"`
	Phases    []Phase       `json:"phases"`
	Tasks     []TaskResult  `json:"sms_tasks,omitempty"`
	// Pipelines is the Redis pipelining measurement (Redis only).
	Pipelines []PipelineResult `json:"redis_pipelines,omitempty"`
}

// Phase is one publish-only or consume-only measurement of one contender.
type Phase struct {
	Contender string  `json:"contender"`
	Role      string  `json:"role"`
	Name      string  `json:"phase"`
	Messages  int64   `json:"messages"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"msgs_per_s"`
	Error     string  `json:"error,omitempty"`
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func compare(ctx context.Context, p brokerPlan, c config, stdout, stderr io.Writer) error {
	rawURL := p.url()
	dir := filepath.Join(c.out, p.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	run := Run{Broker: p.name, Command: bench.CommandLine(), Note: c.note, Size: c.size, Started: time.Now(),
		Machine: bench.ReadMachine(), LoadStart: loadavg()}
	var cs []contender
	for _, k := range p.contenders {
		if len(c.only) == 0 || slices.Contains(c.only, k.name) {
			cs = append(cs, k)
		}
	}
	var errs []error
	for _, k := range cs {
		fmt.Fprintf(stderr, "== %s · %s: publish and consume phases\n", p.name, k.name)
		ph, err := phases(ctx, k, rawURL, c)
		for _, x := range ph {
			fmt.Fprintf(stderr, "   %-28s %9d msgs in %6.2fs = %9.0f msg/s %s\n", x.Name, x.Messages, x.Seconds, x.Rate, x.Error)
		}
		run.Phases = append(run.Phases, ph...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.name, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	var rep *bench.Report
	if !c.skipEngine && ctx.Err() == nil {
		var ts []bench.Target
		for _, k := range cs {
			ts = append(ts, bench.Target{Name: p.name + "/" + k.name, URL: rawURL, Open: k.open, Cleanup: k.cleanup, Client: k.client})
		}
		w := bench.Workload{MessageSize: c.size, Producers: 4, Consumers: 4, Batch: 100,
			Warmup: c.warmup, Duration: c.duration}.WithDefaults()
		s := &bench.Suite{Targets: ts, Workloads: []bench.Workload{w}, Fractions: []float64{0.5}, Repetitions: c.reps,
			Note: c.note, Command: run.Command, Progress: bench.NewProgress(stderr, false)}
		var err error
		rep, err = s.Run(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		if werr := bench.WriteDir(dir, rep); werr != nil {
			errs = append(errs, werr)
		}
	}
	if c.tasks > 0 {
		for _, conc := range c.taskConc {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(stderr, "== %s · SMS tasks, worker concurrency %d\n", p.name, conc)
			r := smsTasks(ctx, rawURL, c.tasks, conc)
			fmt.Fprintf(stderr, "   %d tasks in %.2fs = %.0f tasks/s %s\n", r.Tasks, r.Seconds, r.PerSecond, r.Error)
			run.Tasks = append(run.Tasks, r)
			if r.Error != "" {
				errs = append(errs, fmt.Errorf("sms tasks, concurrency %d: %s", conc, r.Error))
			}
		}
	}
	if p.name == "redis" && c.pipeOps > 0 && ctx.Err() == nil {
		fmt.Fprintf(stderr, "== redis · pipelines\n")
		res, err := pipelines(ctx, rawURL, c.pipeOps, c.pipeTime)
		if err != nil {
			errs = append(errs, fmt.Errorf("pipelines: %w", err))
		}
		run.Pipelines = res
	}
	run.Finished, run.LoadEnd = time.Now(), loadavg()
	f, err := os.Create(filepath.Join(dir, "phases.json"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	err = errors.Join(enc.Encode(run), f.Close())
	if err != nil {
		return err
	}
	md, err := os.Create(filepath.Join(dir, "COMPARISON.md"))
	if err != nil {
		return err
	}
	writeComparison(io.MultiWriter(md, stdout), p, cs, run, rep)
	if err := md.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "comparisons: wrote %s\n", dir)
	return errors.Join(errs...)
}

// phases measures one contender publishing alone, then consuming alone:
// it subscribes first (so the group's queue or offset exists), publishes
// from 32 goroutines one message per call, then from one goroutine 100
// per call, and then times how fast the subscription drains all of it
// with 16 goroutines acking each delivery.
func phases(ctx context.Context, k contender, rawURL string, c config) ([]Phase, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pub, err := k.open(octx, rawURL)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	subB, err := k.open(octx, rawURL)
	if err != nil {
		return nil, err
	}
	defer subB.Close()
	topic := fmt.Sprintf("omnibus-compare-%d", time.Now().UnixNano())
	cleanup := k.cleanup
	if cleanup == nil {
		cleanup = bench.Cleanup
	}
	defer func() { _ = cleanup(context.WithoutCancel(ctx), rawURL, topic, bench.Group) }()
	sub, err := subB.Subscribe(octx, topic, bus.SubscribeOptions{Group: bench.Group, Prefetch: bench.DefaultPrefetch})
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	body := make([]byte, c.size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	ph := func(name string, n int64, d time.Duration, err error) Phase {
		x := Phase{Contender: k.name, Role: k.role, Name: name, Messages: n, Seconds: d.Seconds()}
		if d > 0 {
			x.Rate = float64(n) / d.Seconds()
		}
		if err != nil {
			x.Error = err.Error()
		}
		return x
	}
	var out []Phase
	var total int64
	for _, shape := range []struct {
		name              string
		goroutines, batch int
	}{{"publish 32 goroutines × 1", 32, 1}, {"publish 1 goroutine × 100", 1, 100}} {
		n, d, err := publishPhase(ctx, pub, topic, shape.goroutines, shape.batch, int64(c.messages), c.maxPhase, body)
		out = append(out, ph(shape.name, n, d, err))
		total += n
		if err != nil {
			return out, err
		}
	}
	n, d, err := consumePhase(ctx, sub, total, 16, 3*time.Minute)
	out = append(out, ph("consume 16 goroutines, ack each", n, d, err))
	return out, err
}

func publishPhase(ctx context.Context, pub bus.Publisher, topic string, goroutines, batch int, most int64, limit time.Duration, body []byte) (int64, time.Duration, error) {
	var sent, claimed atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for ctx.Err() == nil {
				if claimed.Add(int64(batch)) > most {
					return
				}
				msgs := make([]*bus.Message, batch)
				for i := range msgs {
					msgs[i] = &bus.Message{Body: body}
				}
				if err := pub.Publish(ctx, topic, msgs...); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err; cancel() })
					}
					return
				}
				sent.Add(int64(batch))
			}
		})
	}
	wg.Wait()
	return sent.Load(), time.Since(start), firstErr
}

func consumePhase(ctx context.Context, sub bus.Subscription, want int64, workers int, limit time.Duration) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var got atomic.Int64
	var first atomic.Int64 // unix nanos of the first receive
	var last atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	for range workers {
		wg.Go(func() {
			for got.Load() < want {
				d, err := sub.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					cancel()
					return
				}
				first.CompareAndSwap(0, time.Now().UnixNano())
				if err := d.Ack(ctx); err != nil {
					once.Do(func() { firstErr = err })
					cancel()
					return
				}
				if got.Add(1) >= want {
					last.Store(time.Now().UnixNano())
					cancel()
				}
			}
		})
	}
	wg.Wait()
	n := got.Load()
	if n < want && firstErr == nil {
		firstErr = fmt.Errorf("received %d of %d within %v", n, want, limit)
	}
	end := last.Load()
	if end == 0 {
		end = time.Now().UnixNano()
	}
	if first.Load() == 0 {
		return n, 0, firstErr
	}
	return n, time.Duration(end - first.Load()), firstErr
}
