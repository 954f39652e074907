package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

var (
	suiteOnce   sync.Once
	suiteReport *Report
	suiteErr    error
)

// smallReport runs a real suite once on the memory backend: a max-rate
// run and a fixed-rate run at half its rate, two repetitions each, plus
// a second, failing broker, so reports have every kind of row.
func smallReport(t *testing.T) *Report {
	t.Helper()
	suiteOnce.Do(func() {
		b := memory.New(memory.Options{})
		defer b.Close()
		s := &Suite{
			Targets: []Target{{Name: "memory", URL: "mem://"}, {Name: "nowhere", URL: "nowhere://"}},
			Workloads: []Workload{quick(Workload{MessageSize: 100, Producers: 2, Consumers: 2, Batch: 20}),
				quick(Workload{MessageSize: 1024, Producers: 1, Consumers: 1, Batch: 20})},
			Fractions:   []float64{0.5},
			Repetitions: 2,
			Note:        "test",
			Command:     "omnibus bench memory",
			Open: func(ctx context.Context, url string) (bus.Broker, error) {
				if strings.HasPrefix(url, "nowhere") {
					return nil, bus.ErrUnreachable
				}
				return b.Connect(), nil
			},
		}
		suiteReport, suiteErr = s.Run(context.Background())
	})
	if suiteReport == nil {
		t.Fatalf("suite: %v", suiteErr)
	}
	return suiteReport
}

func TestSuiteRunsFractionsOfTheMeasuredMax(t *testing.T) {
	r := smallReport(t)
	if suiteErr == nil || !strings.Contains(suiteErr.Error(), "nowhere") {
		t.Errorf("suite error %v, want the unreachable broker's failures", suiteErr)
	}
	var max, fixed, failed []Result
	for _, res := range r.Results {
		switch {
		case res.Error != "":
			failed = append(failed, res)
		case res.Kind == KindMax:
			max = append(max, res)
		default:
			fixed = append(fixed, res)
		}
	}
	if len(max) != 2 || len(fixed) != 2 || len(failed) != 2 {
		t.Fatalf("%d max-rate, %d fixed-rate, %d failed results; want 2, 2, 2", len(max), len(fixed), len(failed))
	}
	for i, m := range max {
		f := fixed[i]
		if len(m.Samples) != 2 || len(f.Samples) != 2 {
			t.Errorf("%s: %d and %d repetitions, want 2", m.ID, len(m.Samples), len(f.Samples))
		}
		if want := float64(int64(m.Sustained() * 0.5)); f.Workload.Rate != want || f.Fraction != 0.5 {
			t.Errorf("%s runs at %v (fraction %v), want half of %v", f.ID, f.Workload.Rate, f.Fraction, m.Sustained())
		}
		if f.Workload.Name != m.Workload.Name {
			t.Errorf("fixed-rate workload %q, want the max-rate one's name %q", f.Workload.Name, m.Workload.Name)
		}
		if f.SendDelay == nil || m.SendDelay != nil || len(f.EndToEnd.Curve) == 0 {
			t.Errorf("%s: send delay %v on fixed, %v on max; curve %d points", f.ID, f.SendDelay, m.SendDelay, len(f.EndToEnd.Curve))
		}
		if m.ConsumeRate.Min > m.ConsumeRate.Median || m.ConsumeRate.Median > m.ConsumeRate.Max {
			t.Errorf("%s: spread %+v out of order", m.ID, m.ConsumeRate)
		}
	}
	if r.Machine.Cores == 0 || r.Machine.Go == "" || len(r.Brokers) != 2 || r.Brokers[0].Product == unknown {
		t.Errorf("machine %+v, brokers %+v", r.Machine, r.Brokers)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := smallReport(t)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	w := raw["results"].([]any)[0].(map[string]any)["workload"].(map[string]any)
	if w["duration"] != "300ms" || w["message_size"] != 100.0 {
		t.Errorf("workload in JSON: %v", w)
	}
	back, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(r.Results) || back.Results[0].Workload != r.Results[0].Workload ||
		back.Results[0].ConsumeRate != r.Results[0].ConsumeRate ||
		back.Results[1].EndToEnd.Merged != r.Results[1].EndToEnd.Merged ||
		back.Machine != r.Machine {
		t.Errorf("round trip changed the report:\n%+v\n%+v", back.Results[0], r.Results[0])
	}
}

func TestMarkdownSummary(t *testing.T) {
	r := smallReport(t)
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, r); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"## Maximum throughput (closed loop)",
		"## Latency at fixed rates (open loop)",
		"| memory | 100B 2p/2c batch 20 |",
		"(50% of max)",
		"2 cores",
		"Durability differs between these brokers",
		"failed: ",
		"Note: test",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	// Every table row has as many cells as its header.
	var cols int
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row with %d separators under a header of %d: %s", n, cols, line)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestWriteDir(t *testing.T) {
	r := smallReport(t)
	dir := filepath.Join(t.TempDir(), "results", "run")
	if err := WriteDir(dir, r); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{JSONFile, MarkdownFile, HTMLFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	html, _ := os.ReadFile(filepath.Join(dir, HTMLFile))
	for _, banned := range []string{"http://", "https://", "<link", "src="} {
		if i := bytes.Index(html, []byte(banned)); i >= 0 && !bytes.Contains(html[max(0, i-30):i+40], []byte("www.w3.org/2000/svg")) {
			t.Errorf("report.html refers outside itself: %q", html[max(0, i-30):min(len(html), i+40)])
		}
	}
}

func TestProgressLinesOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, false)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	p.Start(10 * time.Second)
	p.Begin("memory · 1KB · max · rep 1/1", 4*time.Second)
	for i := range 100 {
		now = now.Add(200 * time.Millisecond)
		p.Update(Live{Phase: "measure", Elapsed: time.Duration(i) * 200 * time.Millisecond, Planned: 4 * time.Second, Received: int64(i) * 1000})
	}
	p.End("memory · 1KB · max · rep 1/1: done")
	p.Finish()
	out := buf.String()
	if strings.Contains(out, "\r") || strings.Contains(out, "\x1b") {
		t.Errorf("control characters off a terminal: %q", out)
	}
	// 20s of updates: a line every 10s, the end line, the done line.
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d lines, want 4:\n%s", n, out)
	}
	if !strings.Contains(out, "5.0k msg/s") || !strings.Contains(out, "rep 1/1: done") {
		t.Errorf("output:\n%s", out)
	}
}

func TestProgressBarOnTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	p.Start(time.Second)
	p.Begin("x", time.Second)
	p.Update(Live{Phase: "warm-up"})
	p.End("x: done")
	p.Finish()
	out := buf.String()
	if !strings.Contains(out, "\r\x1b[K") || !strings.Contains(out, "█") && !strings.Contains(out, "░") {
		t.Errorf("no bar drawn: %q", out)
	}
	var nilProgress *Progress
	nilProgress.Begin("x", 0) // a nil Progress shows nothing and does not panic
	nilProgress.Update(Live{})
	nilProgress.End("")
}
