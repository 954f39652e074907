// Package leak finds goroutines that a test left running. It compares the
// goroutines alive now with a snapshot taken earlier, so that goroutines
// which other tests, the testing package or the runtime started before the
// snapshot never count, and it waits a while for goroutines that end a
// moment after the code under test returned.
package leak

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Patience is how long a check waits for new goroutines to end.
const Patience = 10 * time.Second

// Snapshot is the set of goroutines alive when it was taken.
type Snapshot map[string]bool

// Take records the goroutines alive now.
func Take() Snapshot {
	s := Snapshot{}
	for id := range stacks() {
		s[id] = true
	}
	return s
}

// Since returns the stacks of goroutines started after s that are still
// alive, waiting up to patience for them to end. The calling goroutine
// never counts.
func (s Snapshot) Since(patience time.Duration) []string {
	deadline := time.Now().Add(patience)
	for {
		var left []string
		for id, stack := range stacks() {
			if !s[id] && !ignored(stack) {
				left = append(left, stack)
			}
		}
		if len(left) == 0 || !time.Now().Before(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Check takes a snapshot and returns a function that fails t when
// goroutines started since are still alive after Patience:
//
//	defer leak.Check(t)()
func Check(t testing.TB) func() {
	s := Take()
	return func() {
		t.Helper()
		if left := s.Since(Patience); len(left) > 0 {
			t.Errorf("%d goroutine(s) left running:\n\n%s", len(left), strings.Join(left, "\n\n"))
		}
	}
}

// Main runs the tests of m and then fails the run when goroutines that the
// tests started are still alive after Patience. Call it from TestMain.
func Main(m *testing.M) {
	s := Take()
	code := m.Run()
	if code == 0 {
		if left := s.Since(Patience); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "leak: %d goroutine(s) left running after the tests:\n\n%s\n", len(left), strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// ignored says whether a goroutine belongs to the runtime or the testing
// package rather than to code under test.
func ignored(stack string) bool {
	for _, s := range []string{
		"os/signal.signal_recv", "os/signal.loop", "runtime.ensureSigM",
		"testing.(*M).startAlarm", "testing.runFuzzing", "runtime.ReadTrace",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// stacks returns the stack of every goroutine but the caller's, by
// goroutine ID.
func stacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the caller's own
		}
		head, _, _ := strings.Cut(g, "\n")
		id, ok := strings.CutPrefix(head, "goroutine ")
		if !ok {
			continue
		}
		id, _, _ = strings.Cut(id, " ")
		out[id] = strings.TrimSpace(g)
	}
	return out
}
