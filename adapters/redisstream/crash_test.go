package redisstream_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/internal/leak"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
)

// The crash test runs a consumer in a child process: this test binary,
// started again with these variables set, runs crashChild instead of the
// tests.
const (
	childTopicEnv = "OMNIBUS_REDISSTREAM_CRASH_TOPIC"
	childURLEnv   = "OMNIBUS_REDISSTREAM_CRASH_URL"
)

const (
	crashMessages = 200
	crashAcked    = 30 // the child acks these, then
	crashHeld     = 50 // takes a full window of these and is killed
	crashGroup    = "workers"
)

func crashOptions(o redisstream.Options) redisstream.Options {
	o.VisibilityTimeout = time.Second
	o.ClaimInterval = 100 * time.Millisecond
	return o
}

// TestMain runs the crash test's child when asked to, and otherwise the
// tests, which must leave no goroutine behind.
func TestMain(m *testing.M) {
	if os.Getenv(childTopicEnv) != "" {
		crashChild()
		return
	}
	leak.Main(m)
}

// crashChild consumes as a worker that acks crashAcked messages, then
// takes crashHeld more (its whole prefetch window) and works on them
// until it is killed. It reports on stdout: "acked ID" per ack, then
// "ready".
func crashChild() {
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(2)
	}
	ctx := context.Background()
	u, err := bus.ParseURL(os.Getenv(childURLEnv))
	if err != nil {
		fail(err)
	}
	o, err := redisstream.ParseURL(u)
	if err != nil {
		fail(err)
	}
	b, err := redisstream.New(ctx, crashOptions(o))
	if err != nil {
		fail(err)
	}
	sub, err := b.Subscribe(ctx, os.Getenv(childTopicEnv), bus.SubscribeOptions{Group: crashGroup, Prefetch: crashHeld})
	if err != nil {
		fail(err)
	}
	for range crashAcked {
		d, err := sub.Receive(ctx)
		if err != nil {
			fail(err)
		}
		if err := d.Ack(ctx); err != nil {
			fail(err)
		}
		fmt.Println("acked", d.Message().ID)
	}
	for range crashHeld {
		if _, err := sub.Receive(ctx); err != nil {
			fail(err)
		}
	}
	fmt.Println("ready")
	select {} // "working" until SIGKILL
}

// TestKilledConsumerLosesNothing kills a consumer process with SIGKILL
// while it holds a full window of unsettled deliveries; a surviving
// consumer of the group claims them after the visibility timeout, and
// every message is processed.
func TestKilledConsumerLosesNothing(t *testing.T) {
	raw := redisURL(t)
	o := crashOptions(options(t))
	b := newBroker(t, o)
	topic := topicName(t)
	// The group exists before publishing, as it would in production.
	sub0, err := b.Subscribe(context.Background(), topic, bus.SubscribeOptions{Group: crashGroup})
	if err != nil {
		t.Fatal(err)
	}
	sub0.Close()
	msgs := make([]*bus.Message, crashMessages)
	for i := range msgs {
		msgs[i] = bus.NewMessage(fmt.Appendf(nil, "job-%d", i))
	}
	publish(t, b, topic, msgs...)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childTopicEnv+"="+topic, childURLEnv+"="+raw)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			child.Process.Kill()
		}
		child.Wait()
	})
	acked := map[string]bool{}
	lines := bufio.NewScanner(out)
	ready := make(chan error, 1)
	go func() {
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			switch {
			case len(f) == 2 && f[0] == "acked":
				acked[f[1]] = true
			case len(f) == 1 && f[0] == "ready":
				ready <- nil
				return
			default:
				ready <- fmt.Errorf("child said %q", lines.Text())
				return
			}
		}
		ready <- fmt.Errorf("child exited before it was ready: %v", lines.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child consumer did not get ready")
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	if len(acked) != crashAcked {
		t.Fatalf("child acked %d messages, want %d", len(acked), crashAcked)
	}

	survivor := subscribe(t, b, topic, bus.SubscribeOptions{Group: crashGroup, Prefetch: 20})
	seen := map[string]int{}
	redelivered := 0
	for range crashMessages - crashAcked {
		d := receive(t, survivor)
		m := d.Message()
		if acked[m.ID] {
			t.Fatalf("%s was acked by the killed consumer yet delivered again", m.Body)
		}
		seen[m.ID]++
		if m.Attempt > 1 {
			if m.Attempt != 2 {
				t.Errorf("%s: Attempt %d, want 2 (one delivery to the killed consumer)", m.Body, m.Attempt)
			}
			redelivered++
		}
		ack(t, d)
	}
	for _, m := range msgs {
		if n := seen[m.ID]; !acked[m.ID] && n != 1 {
			t.Errorf("%s processed %d times by the survivor, want 1", m.Body, n)
		}
	}
	if redelivered != crashHeld {
		t.Errorf("%d messages came back from the killed consumer, want its %d unsettled ones", redelivered, crashHeld)
	}
	expectNothing(t, survivor, 300*time.Millisecond)
}
