package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// HeaderSize is the smallest message size: every body starts with the
// timestamp and kind the engine needs to measure end-to-end latency.
const HeaderSize = 16

// Defaults of Workload's fields.
const (
	DefaultMessageSize     = 1024
	DefaultBatch           = 1
	DefaultConsumerWorkers = 16
	DefaultPrefetch        = 256
	DefaultMaxBacklog      = 20000
	DefaultWarmup          = time.Second
	DefaultDuration        = 5 * time.Second
)

// Workload describes one benchmark run in OpenMessaging Benchmark's terms:
// one topic, producers publishing to it, and one subscription group whose
// consumers compete for its messages.
type Workload struct {
	// Name labels the workload in reports. Default: derived from the
	// fields, e.g. "1KB 4p/4c batch 100".
	Name string
	// MessageSize is the body size in bytes, at least HeaderSize. Headers
	// and the ID the backend adds are not counted. Default
	// DefaultMessageSize.
	MessageSize int
	// Producers is how many goroutines publish, each one Publish call at a
	// time. Default 1.
	Producers int
	// Consumers is how many subscriptions of one group receive. Default 1.
	Consumers int
	// ConsumerWorkers is how many goroutines call Receive and Ack on each
	// subscription: backends that settle acks in batches need several.
	// Default DefaultConsumerWorkers.
	ConsumerWorkers int
	// Prefetch is each subscription's window of unsettled deliveries.
	// Default DefaultPrefetch.
	Prefetch int
	// Partitions of the topic, for backends that partition topics
	// (Kafka's partitions, RocketMQ's queues); others ignore it and the
	// result says so. Default: as many as Consumers.
	Partitions int
	// Batch is the number of messages per Publish call. At a fixed rate it
	// is the most a producer sends at once when it has fallen behind
	// schedule; on time it sends one. Default DefaultBatch.
	Batch int
	// Rate is the target in messages per second over all producers; 0 runs
	// a closed loop as fast as the broker goes.
	Rate float64
	// MaxBacklog bounds, in a closed loop, how many published messages may
	// wait unconsumed: producers pause above it, so the maximum measured is
	// what the broker sustains end to end rather than how fast a queue
	// grows. Negative: unbounded. Default DefaultMaxBacklog. Fixed-rate
	// runs ignore it, since pausing would hide exactly what they measure.
	MaxBacklog int
	// Warmup runs before measuring; its messages count in no result.
	// Default DefaultWarmup.
	Warmup time.Duration
	// Duration of the measurement. Default DefaultDuration.
	Duration time.Duration
}

// WithDefaults returns w with every zero field set to its default.
func (w Workload) WithDefaults() Workload {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&w.MessageSize, DefaultMessageSize)
	def(&w.Producers, 1)
	def(&w.Consumers, 1)
	def(&w.ConsumerWorkers, DefaultConsumerWorkers)
	def(&w.Prefetch, DefaultPrefetch)
	def(&w.Partitions, w.Consumers)
	def(&w.Batch, DefaultBatch)
	def(&w.MaxBacklog, DefaultMaxBacklog)
	if w.Warmup == 0 {
		w.Warmup = DefaultWarmup
	}
	if w.Duration == 0 {
		w.Duration = DefaultDuration
	}
	if w.Name == "" {
		w.Name = w.label()
	}
	return w
}

func (w Workload) label() string {
	s := fmt.Sprintf("%s %dp/%dc batch %d", SizeLabel(w.MessageSize), w.Producers, w.Consumers, w.Batch)
	if w.Rate > 0 {
		s += fmt.Sprintf(" @%s/s", count(w.Rate))
	}
	return s
}

// Validate reports every problem of the workload at once, as a
// *bus.ConfigError. Zero fields are valid (they take defaults).
func (w Workload) Validate() error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	if w.MessageSize != 0 && w.MessageSize < HeaderSize {
		add("MessageSize %d is under the %d bytes the engine's header takes", w.MessageSize, HeaderSize)
	}
	for name, v := range map[string]int{"Producers": w.Producers, "Consumers": w.Consumers,
		"ConsumerWorkers": w.ConsumerWorkers, "Prefetch": w.Prefetch, "Partitions": w.Partitions, "Batch": w.Batch} {
		if v < 0 {
			add("%s %d is negative", name, v)
		}
	}
	if w.Rate < 0 {
		add("Rate %g is negative", w.Rate)
	}
	if w.Warmup < 0 {
		add("Warmup %v is negative", w.Warmup)
	}
	if w.Duration < 0 {
		add("Duration %v is negative", w.Duration)
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// OpenLoop reports whether the workload publishes at a fixed rate.
func (w Workload) OpenLoop() bool { return w.Rate > 0 }

type workloadJSON struct {
	Name            string  `json:"name"`
	MessageSize     int     `json:"message_size"`
	Producers       int     `json:"producers"`
	Consumers       int     `json:"consumers"`
	ConsumerWorkers int     `json:"consumer_workers"`
	Prefetch        int     `json:"prefetch"`
	Partitions      int     `json:"partitions"`
	Batch           int     `json:"batch"`
	Rate            float64 `json:"rate"`
	MaxBacklog      int     `json:"max_backlog"`
	Warmup          string  `json:"warmup"`
	Duration        string  `json:"duration"`
}

// MarshalJSON writes durations in Go syntax ("5s") for people reading
// results files.
func (w Workload) MarshalJSON() ([]byte, error) {
	return json.Marshal(workloadJSON{w.Name, w.MessageSize, w.Producers, w.Consumers, w.ConsumerWorkers,
		w.Prefetch, w.Partitions, w.Batch, w.Rate, w.MaxBacklog, w.Warmup.String(), w.Duration.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (w *Workload) UnmarshalJSON(b []byte) error {
	var j workloadJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var errs []error
	parse := func(s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		errs = append(errs, err)
		return d
	}
	*w = Workload{Name: j.Name, MessageSize: j.MessageSize, Producers: j.Producers, Consumers: j.Consumers,
		ConsumerWorkers: j.ConsumerWorkers, Prefetch: j.Prefetch, Partitions: j.Partitions, Batch: j.Batch,
		Rate: j.Rate, MaxBacklog: j.MaxBacklog, Warmup: parse(j.Warmup), Duration: parse(j.Duration)}
	return errors.Join(errs...)
}

// SizeLabel writes a byte count the way workloads are named: 100B, 1KB,
// 64KB, 1MB.
func SizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// count writes a rate or count compactly: 950, 12.5k, 1.2M.
func count(v float64) string {
	switch {
	case v >= 10e6:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 10e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
