package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

// listFlag is a comma-separated list of values of one kind.
type listFlag[T any] struct {
	vals  []T
	parse func(string) (T, error)
	show  func(T) string
}

func (l *listFlag[T]) String() string {
	if l == nil || l.show == nil {
		return ""
	}
	s := make([]string, len(l.vals))
	for i, v := range l.vals {
		s[i] = l.show(v)
	}
	return strings.Join(s, ",")
}

func (l *listFlag[T]) Set(v string) error {
	l.vals = nil
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		x, err := l.parse(f)
		if err != nil {
			return err
		}
		l.vals = append(l.vals, x)
	}
	return nil
}

// parseSize reads a byte count: 100, 100B, 1KB, 64KiB, 1MB (KB and MB
// are binary, as in the workload names).
func parseSize(s string) (int, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			u, mult = strings.TrimSuffix(u, suf.s), suf.m
			break
		}
	}
	n, err := strconv.Atoi(u)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want bytes such as 100, 1KB or 64KiB", s)
	}
	return n * mult, nil
}

func parseFloat(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q: want a number of at least 0", s)
	}
	return v, nil
}

func parsePositive(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a whole number of at least 1", s)
	}
	return n, nil
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := &listFlag[int]{vals: []int{100, 1024}, parse: parseSize, show: bench.SizeLabel}
	producers := &listFlag[int]{vals: []int{1, 4}, parse: parsePositive, show: strconv.Itoa}
	fmtF := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	rates := &listFlag[float64]{parse: parseFloat, show: fmtF}
	fractions := &listFlag[float64]{vals: bench.StandardFractions, parse: parseFloat, show: fmtF}
	fs.Var(sizes, "sizes", "message sizes, comma-separated (100, 1KB, 64KiB)")
	fs.Var(producers, "producers", "producer counts, comma-separated; each is a workload")
	consumers := fs.Int("consumers", 0, "consumers (subscriptions of one group); 0: as many as producers")
	workers := fs.Int("workers", bench.DefaultConsumerWorkers, "goroutines receiving and acking on each consumer")
	prefetch := fs.Int("prefetch", bench.DefaultPrefetch, "unsettled deliveries per consumer")
	partitions := fs.Int("partitions", 0, "topic partitions (Kafka) or queues (RocketMQ); 0: as many as consumers")
	batch := fs.Int("batch", 100, "messages per Publish call (at a fixed rate: the most sent at once when behind)")
	fs.Var(rates, "rates", "fixed rates in msgs/s to run instead of a max-rate run and its fractions; 0 is a max-rate run")
	fs.Var(fractions, "fractions", "shares of each measured maximum to run at a fixed rate")
	backlog := fs.Int("max-backlog", bench.DefaultMaxBacklog, "max-rate runs: producers pause above this many unconsumed messages; -1: never")
	warmup := fs.Duration("warmup", time.Second, "warm-up before each measurement, excluded from results")
	duration := fs.Duration("duration", 2*time.Second, "measurement time of each repetition")
	reps := fs.Int("reps", 3, "repetitions of every run")
	out := fs.String("out", "", "directory for results.json, summary.md and report.html (default bench-results/<time>)")
	note := fs.String("note", "", "a note recorded in the report, such as \"shared machine\"")
	progress := fs.String("progress", "auto", "progress display: auto, bar, lines or off")
	quiet := fs.Bool("q", false, "do not print the summary when done")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: omnibus bench [flags] BROKER...

Runs each workload (every size × producer count) on each broker: a max-rate
run, then fixed-rate runs at -fractions of its measured maximum; or, with
-rates, runs at those rates. Writes results.json, summary.md and report.html
to -out and prints the summary.

BROKER is a URL, NAME=URL to label it, or memory, rabbitmq, redis, kafka, rocketmq, all.

flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErr(fs, "name at least one broker")
	}
	ts, err := targets(pos)
	if err != nil {
		return usageErr(fs, "%v", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var ws []bench.Workload
	for _, size := range sizes.vals {
		for _, p := range producers.vals {
			base := bench.Workload{MessageSize: size, Producers: p, Consumers: *consumers, ConsumerWorkers: *workers,
				Prefetch: *prefetch, Partitions: *partitions, Batch: *batch, MaxBacklog: *backlog,
				Warmup: *warmup, Duration: *duration}
			if base.Consumers == 0 {
				base.Consumers = p
			}
			if len(rates.vals) == 0 {
				ws = append(ws, base.WithDefaults())
				continue
			}
			for _, r := range rates.vals {
				w := base
				w.Rate = r
				ws = append(ws, w.WithDefaults())
			}
		}
	}
	var probs []error
	for _, w := range ws {
		if err := w.Validate(); err != nil {
			probs = append(probs, err)
		}
	}
	if *reps < 1 {
		probs = append(probs, fmt.Errorf("-reps %d: want at least 1", *reps))
	}
	if *duration <= 0 {
		probs = append(probs, fmt.Errorf("-duration %v: want more than 0", *duration))
	}
	if len(probs) > 0 {
		return usageErr(fs, "%v", errors.Join(probs...))
	}
	fr := fractions.vals
	if len(rates.vals) > 0 && !set["fractions"] {
		fr = nil
	}

	var pr *bench.Progress
	switch *progress {
	case "auto":
		pr = bench.NewProgress(stderr, isTerminal(stderr))
	case "bar":
		pr = bench.NewProgress(stderr, true)
	case "lines":
		pr = bench.NewProgress(stderr, false)
	case "off":
	default:
		return usageErr(fs, "-progress %q: want auto, bar, lines or off", *progress)
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("bench-results", time.Now().Format("20060102-150405"))
	}
	s := &bench.Suite{Targets: ts, Workloads: ws, Fractions: fr, Repetitions: *reps, Note: *note,
		Command: bench.CommandLine(), Progress: pr}
	fmt.Fprintf(stderr, "omnibus bench: %d workload(s) on %d broker(s), %d repetition(s) each; about %s\n",
		len(ws), len(ts), *reps, s.Planned().Round(time.Second))
	rep, runErr := s.Run(ctx)
	if err := bench.WriteDir(dir, rep); err != nil {
		return errors.Join(runErr, err)
	}
	if !*quiet {
		if err := bench.WriteMarkdown(stdout, rep); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "omnibus bench: wrote %s, %s and %s in %s\n", bench.JSONFile, bench.MarkdownFile, bench.HTMLFile, dir)
	return runErr
}

// isTerminal reports whether w is a character device, where a progress
// bar can redraw itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
