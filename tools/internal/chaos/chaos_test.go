package chaos_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/tools/internal/chaos"
)

// Environment variables of the chaos run.
const (
	// messagesEnv: messages per scenario (default defaultMessages).
	messagesEnv = "OMNIBUS_CHAOS_MESSAGES"
	// brokersEnv: comma-separated brokers to run (default all four).
	brokersEnv = "OMNIBUS_CHAOS_BROKERS"
	// resultsEnv: a directory to write the Markdown table into.
	resultsEnv = "OMNIBUS_CHAOS_RESULTS"
)

// defaultMessages keeps the run that `go test ./...` makes short.
const defaultMessages = 200

// logs returns the last log lines of the adapters in this process.
var logs = func() string { return "" }

func TestMain(m *testing.M) {
	chaos.RunChildIfAsked()
	logs = chaos.CaptureLogs(60)
	os.Exit(m.Run())
}

func messages(t *testing.T) int {
	v := os.Getenv(messagesEnv)
	if v == "" {
		return defaultMessages
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 40 {
		t.Fatalf("%s=%q: want a number of messages, at least 40", messagesEnv, v)
	}
	return n
}

func brokers(t *testing.T) []string {
	all := []string{"redis", "rabbitmq", "kafka", "rocketmq"}
	v := os.Getenv(brokersEnv)
	if v == "" {
		return all
	}
	var bs []string
	for _, b := range strings.Split(v, ",") {
		b = strings.TrimSpace(b)
		switch b {
		case "redis", "rabbitmq", "kafka", "rocketmq":
			bs = append(bs, b)
		case "":
		default:
			t.Fatalf("%s: unknown broker %q (want %s)", brokersEnv, b, strings.Join(all, ","))
		}
	}
	return bs
}

// unavailable skips the test, or fails it under CI, when a broker's
// programs are missing.
func unavailable(t *testing.T, err error) {
	t.Helper()
	if brokertest.InCI() {
		t.Fatalf("chaos: %v", err)
	}
	t.Skipf("chaos: %v", err)
}

// repo is the repository's root directory.
func repo(t *testing.T) string {
	dir, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// stateDir is where scripts/brokers installed the brokers' jars.
func stateDir(t *testing.T) string {
	if dir := os.Getenv("OMNIBUS_BROKERS_DIR"); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	return filepath.Join(repo(t), ".brokers")
}

func newInstance(t *testing.T, name string) chaos.Instance {
	dir, err := os.MkdirTemp("", "omnibus-chaos-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	var inst chaos.Instance
	switch name {
	case "redis":
		inst, err = chaos.NewRedis(dir)
	case "rabbitmq":
		inst, err = chaos.NewRabbitMQ(dir)
	case "kafka":
		var lib string
		lib, err = chaos.KafkaLib(stateDir(t), os.Getenv("OMNIBUS_KAFKA_VERSION"))
		if err == nil {
			inst, err = chaos.NewKafka(dir, lib)
		}
	case "rocketmq":
		var version string
		version, err = chaos.RocketMQVersion(stateDir(t), os.Getenv("OMNIBUS_ROCKETMQ_VERSION"))
		if err == nil {
			inst, err = chaos.NewRocketMQ(dir, filepath.Join(repo(t), "scripts", "brokers"), stateDir(t), version)
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		unavailable(t, err)
	}
	return inst
}

// TestChaos runs every scenario against a broker instance of its own per
// broker, and reports a table of the counts.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos: skipped with -short")
	}
	n := messages(t)
	var results []chaos.Result
	for _, name := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			inst := newInstance(t, name)
			t.Cleanup(func() {
				if err := inst.Close(); err != nil {
					t.Errorf("stopping the %s instance: %v", name, err)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			start := time.Now()
			err := inst.Start(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s instance up in %v at %s", name, time.Since(start).Round(100*time.Millisecond), inst.URL())
			e := &chaos.Env{
				Instance:  inst,
				Messages:  n,
				Deadline:  90*time.Second + time.Duration(n)*40*time.Millisecond,
				ChildArgs: []string{"-test.run=^$"},
				Logf:      t.Logf,
			}
			for _, s := range chaos.Scenarios() {
				t.Run(s.Name, func(t *testing.T) {
					r := chaos.RunScenario(context.Background(), e, s)
					results = append(results, r)
					t.Logf("%s\n%s", s.What, chaos.Table([]chaos.Result{r}))
					if notes := chaos.Notes([]chaos.Result{r}); notes != "" {
						t.Log(notes)
					}
					if r.Err != "" {
						t.Errorf("%s\n%s\nbroker logs:\n%s", r.Err, logs(), inst.Logs())
					}
				})
			}
		})
	}
	if len(results) == 0 {
		return
	}
	table := chaos.Table(results)
	t.Logf("chaos results, %d messages per scenario:\n%s", n, table)
	if dir := os.Getenv(resultsEnv); dir != "" {
		path, err := writeResults(dir, n, results)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\n%s\n%s\nwritten to %s\n", table, chaos.Notes(results), path)
	}
}

func writeResults(dir string, n int, rs []chaos.Result) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	now := time.Now().UTC()
	var b strings.Builder
	fmt.Fprintf(&b, "# Chaos run %s\n\n", now.Format(time.RFC3339))
	fmt.Fprintf(&b, "%d messages per scenario; %s, %d CPUs.\n\n", n, runtime.Version(), runtime.NumCPU())
	b.WriteString(chaos.Table(rs))
	b.WriteString("\n")
	b.WriteString(chaos.Notes(rs))
	path := filepath.Join(dir, now.Format("20060102-150405")+".md")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}
