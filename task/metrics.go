package task

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Metrics counts task outcomes and run times per task, and serves them in
// the Prometheus text format, without a Prometheus dependency:
//
//	m := task.NewMetrics()
//	w, err := task.NewWorker(b, task.WorkerConfig{Observers: []func(task.Event){m.Observe}})
//	http.Handle("/metrics", m)
//
// Series: omnibus_tasks_total{task,status} (status: success, failure,
// retry), omnibus_tasks_running{task}, and the histogram
// omnibus_task_duration_seconds{task}.
type Metrics struct {
	mu      sync.Mutex
	perTask map[string]*taskMetrics
}

type taskMetrics struct {
	success, failure, retry, running int64
	buckets                          []int64 // cumulative counts per bound
	sum                              float64
	count                            int64
}

// bounds of the duration histogram, in seconds.
var bounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics { return &Metrics{perTask: map[string]*taskMetrics{}} }

// Observe records an event; pass it in WorkerConfig.Observers.
func (m *Metrics) Observe(e Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.perTask[e.Name]
	if t == nil {
		t = &taskMetrics{buckets: make([]int64, len(bounds))}
		m.perTask[e.Name] = t
	}
	switch e.Status {
	case Started:
		t.running++
		return
	case Success:
		t.success++
	case Failure:
		t.failure++
	case Retry:
		t.retry++
	}
	if e.Duration == 0 && e.Status == Failure {
		// Refused before it ran (unknown, expired): never started.
		return
	}
	t.running--
	secs := e.Duration.Seconds()
	for i, b := range bounds {
		if secs <= b {
			t.buckets[i]++
		}
	}
	t.sum += secs
	t.count++
}

// Count returns how many runs of the named task ended with status.
func (m *Metrics) Count(name string, status Status) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.perTask[name]
	if t == nil {
		return 0
	}
	switch status {
	case Success:
		return t.success
	case Failure:
		return t.failure
	case Retry:
		return t.retry
	case Started:
		return t.running
	}
	return 0
}

// ServeHTTP writes the metrics in the Prometheus text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	m.WriteTo(w)
}

// WriteTo writes the metrics in the Prometheus text format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.perTask))
	for n := range m.perTask {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("# HELP omnibus_tasks_total Task runs by outcome.\n# TYPE omnibus_tasks_total counter\n")
	for _, n := range names {
		t := m.perTask[n]
		for _, s := range []struct {
			name string
			v    int64
		}{{"success", t.success}, {"failure", t.failure}, {"retry", t.retry}} {
			fmt.Fprintf(&b, "omnibus_tasks_total{task=%q,status=%q} %d\n", n, s.name, s.v)
		}
	}
	b.WriteString("# HELP omnibus_tasks_running Tasks running now.\n# TYPE omnibus_tasks_running gauge\n")
	for _, n := range names {
		fmt.Fprintf(&b, "omnibus_tasks_running{task=%q} %d\n", n, m.perTask[n].running)
	}
	b.WriteString("# HELP omnibus_task_duration_seconds Run time of tasks.\n# TYPE omnibus_task_duration_seconds histogram\n")
	for _, n := range names {
		t := m.perTask[n]
		for i, bound := range bounds {
			fmt.Fprintf(&b, "omnibus_task_duration_seconds_bucket{task=%q,le=%q} %d\n", n, fmt.Sprint(bound), t.buckets[i])
		}
		fmt.Fprintf(&b, "omnibus_task_duration_seconds_bucket{task=%q,le=\"+Inf\"} %d\n", n, t.count)
		fmt.Fprintf(&b, "omnibus_task_duration_seconds_sum{task=%q} %g\n", n, t.sum)
		fmt.Fprintf(&b, "omnibus_task_duration_seconds_count{task=%q} %d\n", n, t.count)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}
