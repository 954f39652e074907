package leak

import (
	"strings"
	"testing"
	"time"
)

func TestSinceFindsNewGoroutines(t *testing.T) {
	before := Take()
	stop := make(chan struct{})
	go func() { <-stop }()
	left := before.Since(100 * time.Millisecond)
	if len(left) != 1 || !strings.Contains(left[0], "TestSinceFindsNewGoroutines") {
		t.Fatalf("Since = %q, want the one goroutine this test started", left)
	}
	close(stop)
	if left := before.Since(Patience); len(left) != 0 {
		t.Fatalf("Since after it ended = %q, want none", left)
	}
}

func TestSinceWaitsForGoroutinesThatEndSoon(t *testing.T) {
	before := Take()
	go func() { time.Sleep(200 * time.Millisecond) }()
	if left := before.Since(5 * time.Second); len(left) != 0 {
		t.Fatalf("Since = %q, want none once the sleeper ended", left)
	}
	older := make(chan struct{})
	defer close(older)
	go func() { <-older }()
	if left := Take().Since(0); len(left) != 0 {
		t.Fatalf("a goroutine from before the snapshot counted: %q", left)
	}
}
