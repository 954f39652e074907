package main

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

	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

func omnibus(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"pub", "mem://cmd-usage"},
		{"sub", "mem://cmd-usage"},
		{"doctor"},
		{"bench"},
		{"bench", "-sizes", "8", "memory"},
		{"bench", "-progress", "loud", "memory"},
		{"bench", "nosuchbroker"},
		{"pub", "-n", "0", "mem://cmd-usage", "t", "x"},
	} {
		if code, _, stderr := omnibus(t, "", args...); code != 2 || stderr == "" {
			t.Errorf("omnibus %q: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
	if code, out, _ := omnibus(t, "", "help"); code != 0 || !strings.Contains(out, "omnibus bench") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}

func TestTargets(t *testing.T) {
	t.Setenv("OMNIBUS_KAFKA_BROKERS", "k1:9092")
	ts, err := targets([]string{"memory,kafka", "amqp://u:p@h/", "quorum=amqp://u:p@h/?queue_type=quorum", "amqp://u:p@h2/",
		"kafka://10.77.0.11:9092,10.77.0.12:9092,redis"})
	if err != nil {
		t.Fatal(err)
	}
	want := []bench.Target{
		{Name: "memory", URL: "mem://bench"},
		{Name: "kafka", URL: "kafka://k1:9092"},
		{Name: "rabbitmq", URL: "amqp://u:p@h/"},
		{Name: "quorum", URL: "amqp://u:p@h/?queue_type=quorum"},
		{Name: "rabbitmq-2", URL: "amqp://u:p@h2/"},
		{Name: "kafka-2", URL: "kafka://10.77.0.11:9092,10.77.0.12:9092"},
		{Name: "redis", URL: "redis://127.0.0.1:6379/0"},
	}
	if len(ts) != len(want) {
		t.Fatalf("targets = %v", ts)
	}
	for i := range want {
		if ts[i].Name != want[i].Name || ts[i].URL != want[i].URL {
			t.Errorf("target %d = %+v, want %+v", i, ts[i], want[i])
		}
	}
	all, err := targets([]string{"all"})
	if err != nil || len(all) != 5 {
		t.Errorf("all = %v, %v; want the five linked adapters", all, err)
	}
}

func TestPubSub(t *testing.T) {
	url := "mem://cmd-pubsub"
	var wg sync.WaitGroup
	var code int
	var out, errOut string
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, out, errOut = omnibus(t, "", "sub", url, "greetings", "-n", "3", "-timeout", "30s", "-group", "g")
	}()
	// Flags after the positional arguments, as people type them.
	if c, ids, e := omnibus(t, "", "pub", url, "greetings", "hello", "-key", "k1", "-H", "lang=en"); c != 0 || len(strings.Fields(ids)) != 1 {
		t.Fatalf("pub: exit %d, %q, %q", c, ids, e)
	}
	if c, ids, e := omnibus(t, "line one\nline two\n", "pub", url, "greetings"); c != 0 || len(strings.Fields(ids)) != 2 {
		t.Fatalf("pub from stdin: exit %d, %q, %q", c, ids, e)
	}
	wg.Wait()
	if code != 0 {
		t.Fatalf("sub: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `key="k1" lang="en" hello`) || !strings.HasSuffix(lines[2], " line two") {
		t.Errorf("sub printed:\n%s", out)
	}

	// JSON output, and a timeout when nothing comes.
	if c, _, e := omnibus(t, "", "pub", url, "json", `{"a":1}`); c != 0 {
		t.Fatal(e)
	}
	c, js, e := omnibus(t, "", "sub", "-json", "-n", "1", url, "json")
	var m printed
	if c != 0 || json.Unmarshal([]byte(js), &m) != nil || m.Body != `{"a":1}` || m.Attempt != 1 {
		t.Errorf("sub -json: exit %d, %q, %q", c, js, e)
	}
	if c, _, e := omnibus(t, "", "sub", "-timeout", "100ms", url, "empty"); c != 1 || !strings.Contains(e, "no message within") {
		t.Errorf("sub on an empty topic: exit %d, %q", c, e)
	}
}

func TestDoctorMemory(t *testing.T) {
	code, out, errOut := omnibus(t, "", "doctor", "memory")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"connect:", "omnibus in-process broker", "durability:", "round trip:    ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

func TestDoctorUnreachable(t *testing.T) {
	code, out, _ := omnibus(t, "", "doctor", "redis://127.0.0.1:1/0?dial_timeout=500ms")
	if code != 1 || !strings.Contains(out, "FAILED") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestBenchWritesResults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	code, out, errOut := omnibus(t, "", "bench", "-sizes", "128", "-producers", "2", "-batch", "10",
		"-warmup", "100ms", "-duration", "300ms", "-reps", "1", "-fractions", "0.5", "-progress", "lines",
		"-note", "test run", "-out", dir, "mem://cmd-bench")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
	if !strings.Contains(out, "## Maximum throughput") || !strings.Contains(errOut, "rep 1/1") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	f, err := os.Open(filepath.Join(dir, bench.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.Results[1].Kind != bench.KindFixed || rep.Note != "test run" ||
		rep.Results[0].Workload.Consumers != 2 || rep.Results[0].Workload.MessageSize != 128 {
		t.Errorf("results: %+v", rep.Results)
	}
	for _, name := range []string{bench.MarkdownFile, bench.HTMLFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}

	// report renders them again elsewhere.
	again := t.TempDir()
	if code, _, e := omnibus(t, "", "report", "-out", again, filepath.Join(dir, bench.JSONFile)); code != 0 {
		t.Fatalf("report: %s", e)
	}
	a, _ := os.ReadFile(filepath.Join(dir, bench.MarkdownFile))
	b, _ := os.ReadFile(filepath.Join(again, bench.MarkdownFile))
	if !bytes.Equal(a, b) {
		t.Error("summary.md rendered from results.json differs from the original")
	}
}

func TestBenchFixedRates(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := omnibus(t, "", "bench", "-sizes", "64", "-producers", "1", "-rates", "500,1000",
		"-warmup", "100ms", "-duration", "200ms", "-reps", "1", "-progress", "off", "-q", "-out", dir, "mem://cmd-rates")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	f, _ := os.Open(filepath.Join(dir, bench.JSONFile))
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.Results[0].Workload.Rate != 500 || rep.Results[1].Workload.Rate != 1000 {
		t.Errorf("-rates 500,1000 ran %d results", len(rep.Results))
	}
}
