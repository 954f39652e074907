package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// ChildEnv is the environment variable that makes RunChildIfAsked run a
// consumer process; it holds the ChildSpec as JSON.
const ChildEnv = "OMNIBUS_CHAOS_CHILD"

// ChildSpec describes a consumer process.
type ChildSpec struct {
	URL, Topic, Group string
	Concurrency       int
	// Work is the longest the handler works on a message; each takes
	// between half of it and all of it.
	Work time.Duration
	// ShutdownTimeout of the process's bus.Consumer.
	ShutdownTimeout time.Duration
}

// RunChildIfAsked runs a consumer process and exits when ChildEnv is set,
// and returns at once otherwise. A test binary calls it first in TestMain,
// so that the scenarios can start consumers by running it again.
//
// The process runs a bus.Consumer over the spec's topic and prints one
// line per event on stdout: "start <id>" when the handler starts on a
// message, "done <id>" when it finished it (before it is acknowledged), "term" when SIGTERM arrived and a
// graceful shutdown began, and "exit cancelled=<n>" when the consumer
// returned, n being how many handlers saw their context cancelled.
func RunChildIfAsked() {
	raw := os.Getenv(ChildEnv)
	if raw == "" {
		return
	}
	var spec ChildSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	os.Exit(runChild(spec))
}

func runChild(spec ChildSpec) int {
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	ctx := context.Background()
	b, err := bus.Open(ctx, spec.URL)
	if err != nil {
		say("error %v", err)
		return 2
	}
	var cancelled atomic.Int64
	h := func(ctx context.Context, m *bus.Message) error {
		say("start %s", m.ID)
		// Between half and all of Work, so that the handlers do not run
		// in lockstep and a signal finds some of them busy.
		work := spec.Work/2 + rand.N(spec.Work/2+1)
		select {
		case <-time.After(work):
			say("done %s", m.ID)
			return nil
		case <-ctx.Done():
			cancelled.Add(1)
			return ctx.Err()
		}
	}
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:           spec.Topic,
		Subscribe:       bus.SubscribeOptions{Group: spec.Group},
		Concurrency:     spec.Concurrency,
		ShutdownTimeout: spec.ShutdownTimeout,
		Backoff:         func(int) time.Duration { return 100 * time.Millisecond },
	}, h)
	if err != nil {
		say("error %v", err)
		return 2
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		say("term")
		_ = c.Shutdown(context.Background())
	}()
	runErr := c.Run(ctx)
	say("exit cancelled=%d", cancelled.Load())
	if runErr != nil {
		say("error %v", runErr)
		return 3
	}
	if err := b.Close(); err != nil {
		say("error closing: %v", err)
		return 3
	}
	return 0
}

// Child is a consumer process started by a scenario.
type Child struct {
	name   string
	cmd    *exec.Cmd
	stderr *ring
	exited chan struct{}
	err    error // exit status, after exited

	mu        sync.Mutex
	started   int
	done      int
	afterTerm int
	termed    bool
	atTerm    int // handlers running when "term" was read
	exitLine  string
	problems  []string
}

// startChild runs the test binary again as a consumer process; every
// message it finishes is recorded in l.
func startChild(args []string, spec ChildSpec, name string, l *Ledger) (*Child, error) {
	return startChildVia(nil, args, spec, name, l)
}

// startChildVia is startChild with the test binary started by the
// command via (such as scripts/clusters exec --client 2), when not empty.
func startChildVia(via, args []string, spec ChildSpec, name string, l *Ledger) (*Child, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &Child{name: name, stderr: &ring{max: 40}, exited: make(chan struct{})}
	argv := append(append(append([]string(nil), via...), exe), args...)
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Env = append(os.Environ(), ChildEnv+"="+string(js))
	c.cmd.Stderr = c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			line := s.Text()
			c.mu.Lock()
			switch {
			case strings.HasPrefix(line, "start "):
				c.started++
			case strings.HasPrefix(line, "done "):
				l.Processed(strings.TrimPrefix(line, "done "))
				c.done++
				if c.termed {
					c.afterTerm++
				}
			case line == "term":
				c.termed = true
				c.atTerm = c.started - c.done
			case strings.HasPrefix(line, "exit "):
				c.exitLine = line
			default:
				c.problems = append(c.problems, line)
			}
			c.mu.Unlock()
		}
	}()
	go func() {
		<-read // Wait closes stdout: read it to the end first
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// Done is how many messages the process has finished.
func (c *Child) Done() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// InFlight is how many messages the process started and has not
// finished (so far, or when it died).
func (c *Child) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started - c.done
}

// Kill sends SIGKILL and waits for the process.
func (c *Child) Kill() error {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	return c.wait(10 * time.Second)
}

// Term sends SIGTERM.
func (c *Child) Term() { _ = c.cmd.Process.Signal(syscall.SIGTERM) }

// wait waits for the process to exit, killing it after d.
func (c *Child) wait(d time.Duration) error {
	select {
	case <-c.exited:
		return nil
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("consumer process %s did not exit within %v; killed it\n%s", c.name, d, c.Stderr())
	}
}

// Stop ends the process if it still runs, for cleanup.
func (c *Child) Stop() {
	select {
	case <-c.exited:
	default:
		_ = c.Kill()
	}
}

// Graceful sends SIGTERM and checks the process shut down cleanly within
// d: exit status 0, no handler cancelled, every handler running at the
// signal finished. It returns how many handlers were running at the
// signal and how many messages it finished after it.
func (c *Child) Graceful(d time.Duration) (running, finished int, err error) {
	c.Term()
	if err := c.wait(d); err != nil {
		return 0, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || len(c.problems) > 0 {
		return c.atTerm, c.afterTerm, fmt.Errorf("consumer process %s: %v after SIGTERM; it said %q\n%s", c.name, c.err, c.problems, c.stderr)
	}
	if c.exitLine != "exit cancelled=0" {
		return c.atTerm, c.afterTerm, fmt.Errorf("consumer process %s: %q after SIGTERM, want every handler to finish (cancelled=0)", c.name, c.exitLine)
	}
	if c.started != c.done {
		return c.atTerm, c.afterTerm, fmt.Errorf("consumer process %s exited with %d handlers unfinished", c.name, c.started-c.done)
	}
	return c.atTerm, c.afterTerm, nil
}

// Stderr returns the last lines the process wrote to stderr.
func (c *Child) Stderr() string { return "---- stderr of " + c.name + "\n" + c.stderr.String() }

// ring keeps the last lines written to it.
type ring struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial string
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := strings.Split(r.partial+string(p), "\n")
	r.partial = parts[len(parts)-1]
	r.lines = append(r.lines, parts[:len(parts)-1]...)
	if len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
	return len(p), nil
}

func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(append(r.lines, r.partial), "\n")
}
