package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/omnibus-mq/omnibus/bus"
)

// Kinds of run.
const (
	KindMax   = "max-rate"   // closed loop, as fast as the broker goes
	KindFixed = "fixed-rate" // open loop at a set rate
)

// Result is one workload on one broker over its repetitions.
type Result struct {
	// ID names the result uniquely within a report.
	ID     string `json:"id"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
	// Fraction is, for a fixed-rate run derived from a max-rate run, the
	// share of that run's median maximum it targets.
	Fraction float64  `json:"fraction_of_max,omitempty"`
	Workload Workload `json:"workload"`
	// Throughputs are the medians and ranges over the repetitions.
	PublishRate Spread `json:"publish_msgs_per_s"`
	ConsumeRate Spread `json:"consume_msgs_per_s"`
	PublishMBps Spread `json:"publish_mb_per_s"`
	ConsumeMBps Spread `json:"consume_mb_per_s"`
	// Latencies; SendDelay only for fixed-rate runs.
	PublishLatency *Latency `json:"publish_latency,omitempty"`
	EndToEnd       *Latency `json:"end_to_end_latency,omitempty"`
	SendDelay      *Latency `json:"send_delay,omitempty"`
	// EndToEndFromSend is the uncorrected end-to-end latency of
	// fixed-rate runs (see Sample.EndToEndFromSend).
	EndToEndFromSend *Latency  `json:"end_to_end_from_send,omitempty"`
	Samples          []Sample  `json:"repetitions"`
	Notes            []string  `json:"notes,omitempty"`
	Error            string    `json:"error,omitempty"`
	Started          time.Time `json:"started"`
}

// Sustained is the rate the broker kept up with end to end: the median
// over repetitions of the lesser of publish and consume rate.
func (r Result) Sustained() float64 {
	var v []float64
	for _, s := range r.Samples {
		v = append(v, min(s.PublishRate, s.ConsumeRate))
	}
	return spreadOf(v).Median
}

// Report is everything one benchmark invocation measured.
type Report struct {
	Tool     string       `json:"tool"`
	Version  string       `json:"omnibus_version"`
	Command  string       `json:"command,omitempty"`
	Note     string       `json:"note,omitempty"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Machine  Machine      `json:"machine"`
	Brokers  []BrokerInfo `json:"brokers"`
	Results  []Result     `json:"results"`
}

// Runner runs workloads against one broker, opening fresh connections
// (one for producers, one for consumers) and a fresh topic for every
// repetition, and deleting the topic's broker objects afterwards.
type Runner struct {
	Target Target
	// Open connects to a URL. Default bus.Open.
	Open func(ctx context.Context, url string) (bus.Broker, error)
	// Cleanup removes a finished repetition's topic. Default Cleanup;
	// errors are noted in the result.
	Cleanup func(ctx context.Context, url, topic, group string) error
	// Progress, when set, is told of every repetition.
	Progress *Progress
}

// Run runs w reps times and summarises the repetitions. A failed
// repetition ends the run; the result keeps what finished, with the error.
func (r *Runner) Run(ctx context.Context, kind string, w Workload, reps int) Result {
	w = w.WithDefaults()
	res := Result{Target: r.Target.Name, Kind: kind, Workload: w, Started: time.Now()}
	res.ID = r.Target.Name + "/" + w.Name + "/" + kind
	if kind == KindFixed {
		res.ID += "@" + strconv.FormatFloat(w.Rate, 'f', 0, 64)
	}
	if err := w.Validate(); err != nil {
		res.Error = err.Error()
		return res
	}
	rawURL, notes := runURL(r.Target.URL, w)
	res.Notes = append(res.Notes, notes...)
	if kind == KindMax && w.MaxBacklog > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("closed loop: producers pause while more than %d messages are unconsumed", w.MaxBacklog))
	}
	open, cleanup := r.Open, r.Cleanup
	if r.Target.Open != nil {
		open = r.Target.Open
	}
	if open == nil {
		open = bus.Open
	}
	if r.Target.Cleanup != nil {
		cleanup = r.Target.Cleanup
	}
	if cleanup == nil {
		cleanup = Cleanup
	}
	for rep := 1; rep <= reps; rep++ {
		label := fmt.Sprintf("%s · %s · %s · rep %d/%d", r.Target.Name, w.Name, kindLabel(kind, w), rep, reps)
		r.Progress.Begin(label, w.Warmup+w.Duration)
		topic := newTopic()
		s, err := r.once(ctx, open, rawURL, topic, w)
		if cerr := cleanup(context.WithoutCancel(ctx), rawURL, topic, Group); cerr != nil {
			res.Notes = appendOnce(res.Notes, cerr.Error())
		}
		if err != nil {
			res.Error = fmt.Sprintf("repetition %d: %v", rep, err)
			r.Progress.End(label + ": " + res.Error)
			break
		}
		res.Samples = append(res.Samples, s)
		r.Progress.End(label + ": " + sampleLine(s))
	}
	res.summarise()
	return res
}

func kindLabel(kind string, w Workload) string {
	if kind == KindFixed {
		return "fixed " + count(w.Rate) + "/s"
	}
	return "max"
}

func sampleLine(s Sample) string {
	line := fmt.Sprintf("publish %s msg/s, consume %s msg/s, e2e p50 %s p99 %s", count(s.PublishRate), count(s.ConsumeRate),
		fmtMs(s.EndToEnd.P50), fmtMs(s.EndToEnd.P99))
	if s.Unsent > 0 {
		line += fmt.Sprintf(", %d unsent", s.Unsent)
	}
	if s.PublishErrors > 0 {
		line += fmt.Sprintf(", %d publish errors", s.PublishErrors)
	}
	return line
}

func (r *Runner) once(ctx context.Context, open func(context.Context, string) (bus.Broker, error), rawURL, topic string, w Workload) (Sample, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pub, err := open(octx, rawURL)
	if err != nil {
		return Sample{}, err
	}
	defer pub.Close()
	sub, err := open(octx, rawURL)
	if err != nil {
		return Sample{}, err
	}
	defer sub.Close()
	return Measure(ctx, pub, sub, topic, w, r.Progress.Update)
}

func (res *Result) summarise() {
	if len(res.Samples) == 0 {
		return
	}
	var pr, cr, pm, cm []float64
	var pub, e2e, delay, sent []Percentiles
	var pubH, e2eH, delayH, sentH []*hdrhistogram.Histogram
	for _, s := range res.Samples {
		pr, cr = append(pr, s.PublishRate), append(cr, s.ConsumeRate)
		pm, cm = append(pm, s.PublishMBps), append(cm, s.ConsumeMBps)
		pub, e2e = append(pub, s.PublishLatency), append(e2e, s.EndToEnd)
		pubH, e2eH = append(pubH, s.pubHist), append(e2eH, s.e2eHist)
		if s.SendDelay != nil {
			delay, delayH = append(delay, *s.SendDelay), append(delayH, s.delayHist)
		}
		if s.EndToEndFromSend != nil {
			sent, sentH = append(sent, *s.EndToEndFromSend), append(sentH, s.e2eSentHist)
		}
	}
	res.PublishRate, res.ConsumeRate = spreadOf(pr), spreadOf(cr)
	res.PublishMBps, res.ConsumeMBps = spreadOf(pm), spreadOf(cm)
	res.PublishLatency = latencyOf(pub, mergeHists(pubH...))
	res.EndToEnd = latencyOf(e2e, mergeHists(e2eH...))
	if len(delay) > 0 {
		res.SendDelay = latencyOf(delay, mergeHists(delayH...))
	}
	if len(sent) > 0 {
		res.EndToEndFromSend = latencyOf(sent, mergeHists(sentH...))
	}
	var unsent, undrained, extra, errs int64
	for i, s := range res.Samples {
		if s.ConsumersReady < res.Workload.Consumers {
			res.Notes = append(res.Notes, fmt.Sprintf("repetition %d started with %d of %d consumers receiving (after %v)",
				i+1, s.ConsumersReady, res.Workload.Consumers, s.ReadyAfter.Round(time.Millisecond)))
		}
		unsent += s.Unsent
		undrained += s.Undrained
		extra += s.Extra
		errs += s.PublishErrors + s.ReceiveErrors + s.AckErrors
	}
	// A producer a few messages behind when the window closes is noise; a
	// hundredth of the schedule missed means the rate was out of reach.
	if due := res.Workload.Rate * res.Workload.Duration.Seconds() * float64(len(res.Samples)); unsent > 0 && float64(unsent) > due/100 {
		res.Notes = append(res.Notes, fmt.Sprintf("behind schedule: %d of %.0f messages due in the windows were never sent; the target rate was not reached", unsent, due))
	}
	if undrained > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d published messages were not received before the drain timeout", undrained))
	}
	if extra > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d messages were received more than once", extra))
	}
	if errs > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d publish, receive or ack errors", errs))
	}
}

// runURL returns the URL a workload runs on: Kafka gets its partition
// count, RocketMQ its queue count; for other backends partitions do not
// apply.
func runURL(rawURL string, w Workload) (string, []string) {
	u, err := bus.ParseURL(rawURL)
	if err != nil || (u.Scheme != "kafka" && u.Scheme != "rocketmq") {
		return rawURL, nil
	}
	param := "partitions"
	if u.Scheme == "rocketmq" {
		param = "queues"
	}
	q := u.Query()
	if q.Has(param) {
		if q.Get(param) != strconv.Itoa(w.Partitions) {
			return rawURL, []string{param + " from the URL (" + q.Get(param) + ") override the workload's"}
		}
		return rawURL, nil
	}
	q.Set(param, strconv.Itoa(w.Partitions))
	c := *u
	c.RawQuery = q.Encode()
	return c.String(), nil
}

func newTopic() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "omnibus-bench-" + hex.EncodeToString(b[:])
}

func appendOnce(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// Suite runs workloads against several brokers and gathers a Report.
type Suite struct {
	Targets []Target
	// Workloads run in order on each target. One with Rate 0 is a
	// max-rate run, followed by a fixed-rate run at each of Fractions of
	// its measured maximum.
	Workloads []Workload
	// Fractions of a max-rate run's sustained rate to run at a fixed rate.
	Fractions []float64
	// Repetitions of every run. Default 3.
	Repetitions int
	// Note is recorded in the report, e.g. "shared machine".
	Note string
	// Command is recorded in the report.
	Command string
	// Open connects to a URL. Default bus.Open.
	Open func(ctx context.Context, url string) (bus.Broker, error)
	// Progress, when set, shows the suite's progress.
	Progress *Progress
}

// openOf is how the suite connects to t.
func (s *Suite) openOf(t Target) func(context.Context, string) (bus.Broker, error) {
	if t.Open != nil {
		return t.Open
	}
	return s.Open
}

// Planned estimates the suite's running time, for progress displays.
func (s *Suite) Planned() time.Duration {
	reps := max(s.Repetitions, 1)
	var per time.Duration
	for _, w := range s.Workloads {
		w = w.WithDefaults()
		n := 1
		if !w.OpenLoop() {
			n += len(s.Fractions)
		}
		// The second accounts for connecting, the ready check and the drain.
		per += time.Duration(n*reps) * (w.Warmup + w.Duration + time.Second)
	}
	return per * time.Duration(len(s.Targets))
}

// Run runs every workload on every target, the targets interleaved
// workload by workload. A target that cannot be
// reached is reported in its results' errors and the suite goes on; the
// returned error joins the failures.
func (s *Suite) Run(ctx context.Context) (*Report, error) {
	if s.Repetitions <= 0 {
		s.Repetitions = 3
	}
	rep := &Report{Tool: "omnibus bench", Version: ModuleVersion(ModulePath), Command: s.Command, Note: s.Note,
		Started: time.Now(), Machine: ReadMachine()}
	s.Progress.Start(s.Planned())
	defer s.Progress.Finish()
	var errs []error
	runners := make([]*Runner, len(s.Targets))
	for i, t := range s.Targets {
		info := Probe(ctx, t)
		info.Features = features(ctx, s.openOf(t), t.URL)
		if u, err := url.Parse(t.URL); err == nil && u.Scheme != "kafka" && u.Scheme != "rocketmq" {
			info.Notes = append(info.Notes, "workload partitions apply to Kafka and RocketMQ only: here a topic is one queue or stream per group")
		}
		rep.Brokers = append(rep.Brokers, info)
		runners[i] = &Runner{Target: t, Open: s.Open, Progress: s.Progress}
	}
	// Workload by workload, every target in turn: targets compared in
	// one run share the machine's quieter and busier spells alike.
	for _, w := range s.Workloads {
		for _, r := range runners {
			if ctx.Err() != nil {
				break
			}
			kind := KindMax
			if w.OpenLoop() {
				kind = KindFixed
			}
			res := r.Run(ctx, kind, w, s.Repetitions)
			rep.Results = append(rep.Results, res)
			if res.Error != "" {
				errs = append(errs, fmt.Errorf("%s: %s", res.ID, res.Error))
				s.Progress.Skip(time.Duration(len(s.Fractions)*s.Repetitions) * (w.WithDefaults().Warmup + w.WithDefaults().Duration + time.Second))
				continue
			}
			if w.OpenLoop() {
				continue
			}
			peak := res.Sustained()
			for _, f := range s.Fractions {
				fw := w
				fw.Name = ""
				fw.Rate = float64(int64(peak * f))
				if fw.Rate < 1 {
					continue
				}
				fw = fw.WithDefaults()
				fw.Name = w.WithDefaults().Name
				fr := r.Run(ctx, KindFixed, fw, s.Repetitions)
				fr.Fraction = f
				rep.Results = append(rep.Results, fr)
				if fr.Error != "" {
					errs = append(errs, fmt.Errorf("%s: %s", fr.ID, fr.Error))
				}
			}
		}
	}
	rep.Finished = time.Now()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// features opens the broker briefly to ask what it guarantees.
func features(ctx context.Context, open func(context.Context, string) (bus.Broker, error), rawURL string) *bus.Features {
	if open == nil {
		open = bus.Open
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := open(ctx, rawURL)
	if err != nil {
		return nil
	}
	defer b.Close()
	if fr, ok := b.(bus.FeatureReporter); ok {
		f := fr.Features()
		return &f
	}
	return nil
}

// StandardWorkloads are the workloads of `make bench`: 100 B and 1 KB
// messages from 1 and 4 producers, each with as many consumers, in
// batches of batch, measured for warmup plus duration.
func StandardWorkloads(batch int, warmup, duration time.Duration) []Workload {
	var ws []Workload
	for _, size := range []int{100, 1024} {
		for _, p := range []int{1, 4} {
			ws = append(ws, Workload{MessageSize: size, Producers: p, Consumers: p, Batch: batch,
				Warmup: warmup, Duration: duration}.WithDefaults())
		}
	}
	return ws
}

// StandardFractions are the shares of the measured maximum that `make
// bench` runs at a fixed rate: comfortably loaded, and near the limit.
var StandardFractions = []float64{0.5, 0.8}

// CommandLine renders os.Args for the report, with URL passwords redacted.
func CommandLine() string {
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		if i == 0 {
			// go run builds into a cache path that says nothing.
			a = filepath.Base(a)
		}
		if u, err := url.Parse(a); err == nil && u.User != nil {
			a = u.Redacted()
		}
		// Also name=URL targets and URLs that do not parse.
		a = RedactText(a)
		if a == "" || strings.ContainsAny(a, " \t\"'$") {
			a = strconv.Quote(a)
		}
		args[i] = a
	}
	return strings.Join(args, " ")
}
