// Package bustest is the conformance suite every omnibus backend runs.
//
// An adapter's test calls Run with a Config that connects to the backend
// under test and declares its features:
//
//	func TestConformance(t *testing.T) {
//		b := memory.New(memory.Options{})
//		bustest.Run(t, bustest.Config{
//			Connect:  func(t testing.TB) bus.Broker { return b.Connect() },
//			Features: b.Features(),
//		})
//	}
//
// Each test uses fresh topic names, so the suite can run against a shared,
// long-lived broker.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Config describes the backend under test.
type Config struct {
	// Connect opens a new connection to the backend. Connections opened by
	// one Config reach the same broker. The suite closes them.
	Connect func(t testing.TB) bus.Broker
	// Features the backend guarantees; tests of missing features are
	// skipped with the flag named.
	Features bus.Features
	// RedeliveryWait is how long the backend takes to redeliver what a
	// closed connection left unacknowledged (a visibility timeout, say).
	// Zero means it happens at once.
	RedeliveryWait time.Duration
	// MaxUnsettled is the most unsettled deliveries one subscription hands
	// out whatever Prefetch asks, for backends that deliver one message at
	// a time (most watermill pub/subs behind the bridge). Zero means the
	// backend honours Prefetch.
	MaxUnsettled int
	// KnownFailures names cases the backend is known to fail, with the
	// reason; they are reported as skipped with it. Meant for third-party
	// backends behind a bridge, whose behaviour omnibus cannot change.
	KnownFailures map[string]string
	// AckedRedelivered, when set, says why the backend may deliver a
	// message again after it was acknowledged (offsets committed on an
	// interval, say): the suite then reports such duplicates in the log
	// instead of failing on them, and waits for every message rather than
	// for a count of deliveries. Lost messages still fail. Meant, like
	// KnownFailures, for third-party backends behind a bridge.
	AckedRedelivered string
	// Timeout bounds each wait for a message. Default 30s.
	Timeout time.Duration
	// TopicPrefix starts every topic name the suite makes. Default "bustest".
	TopicPrefix string
}

// window returns how many deliveries a subscription asked for n will
// really hold unsettled.
func (c Config) window(n int) int {
	if c.MaxUnsettled > 0 {
		return min(n, c.MaxUnsettled)
	}
	return n
}

func (c Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 30 * time.Second
}

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, cfg Config) {
	if cfg.Connect == nil {
		t.Fatal("bustest: Config.Connect is nil")
	}
	s := &suite{cfg: cfg}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"RoundTrip", s.testRoundTrip},
		{"BatchPublish", s.testBatchPublish},
		{"ConcurrentPublishers", s.testConcurrentPublishers},
		{"CompetingConsumers", s.testCompetingConsumers},
		{"GroupsFanOut", s.testGroupsFanOut},
		{"NackRedelivers", s.testNackRedelivers},
		{"NackDelayDoesNotBlock", s.testNackDelayDoesNotBlock},
		{"DeadLetterAfterMaxAttempts", s.testDeadLetterAfterMaxAttempts},
		{"DeadLetterAtOnce", s.testDeadLetterAtOnce},
		{"DeadLetterWinsOverPostpone", s.testDeadLetterWinsOverPostpone},
		{"PostponeKeepsAttempt", s.testPostponeKeepsAttempt},
		{"OrderPerKey", s.testOrderPerKey},
		{"PrefetchWindow", s.testPrefetchWindow},
		{"SettleTwice", s.testSettleTwice},
		{"CancelAndClose", s.testCancelAndClose},
		{"NoGoroutineLeft", s.testNoGoroutineLeft},
		{"LargeMessages", s.testLargeMessages},
		{"DeadConsumerRedelivery", s.testDeadConsumerRedelivery},
		{"ConsumerRetriesAndDeadLetters", s.testConsumerRetriesAndDeadLetters},
		{"ConsumerGracefulShutdown", s.testConsumerGracefulShutdown},
		{"ConsumerOrderedByKey", s.testConsumerOrderedByKey},
	}
	for _, tc := range tests {
		if reason, known := cfg.KnownFailures[tc.name]; known {
			t.Run(tc.name, func(t *testing.T) { t.Skip("known failure of this backend: " + reason) })
			continue
		}
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	cfg Config
}

// connect opens a connection that is closed when the test ends.
func (s *suite) connect(t *testing.T) bus.Broker {
	t.Helper()
	b := s.cfg.Connect(t)
	if b == nil {
		t.Fatal("bustest: Connect returned nil")
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// topic returns a fresh topic name.
func (s *suite) topic(t *testing.T) string {
	prefix := s.cfg.TopicPrefix
	if prefix == "" {
		prefix = "bustest"
	}
	var r [4]byte
	rand.Read(r[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return fmt.Sprintf("%s.%s.%s", prefix, name, hex.EncodeToString(r[:]))
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.cfg.timeout())
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) subscribe(t *testing.T, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(s.ctx(t), topic, opts)
	if err != nil {
		t.Fatalf("Subscribe(%q, %+v): %v", topic, opts, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func (s *suite) publish(t *testing.T, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	if err := p.Publish(s.ctx(t), topic, msgs...); err != nil {
		t.Fatalf("Publish(%q, %d messages): %v", topic, len(msgs), err)
	}
}

// receive waits for one delivery.
func (s *suite) receive(t *testing.T, sub bus.Subscription) bus.Delivery {
	t.Helper()
	return s.receiveWithin(t, sub, s.cfg.timeout())
}

func (s *suite) receiveWithin(t *testing.T, sub bus.Subscription, d time.Duration) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	del, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v (waited %v)", err, d)
	}
	return del
}

// expectNothing checks that no delivery arrives within d.
func (s *suite) expectNothing(t *testing.T, sub bus.Subscription, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	del, err := sub.Receive(ctx)
	if err == nil {
		m := del.Message()
		t.Fatalf("unexpected delivery of %s (attempt %d, body %q)", m.ID, m.Attempt, truncate(m.Body))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: %v, want context.DeadlineExceeded", err)
	}
}

// collect receives and acknowledges n deliveries and returns their messages.
func (s *suite) collect(t *testing.T, sub bus.Subscription, n int) []*bus.Message {
	t.Helper()
	out := make([]*bus.Message, 0, n)
	seen := map[string]bool{}
	for len(seen) < n && (s.cfg.AckedRedelivered != "" || len(out) < n) {
		d := s.receive(t, sub)
		ack(t, d)
		out = append(out, d.Message())
		seen[d.Message().ID] = true
	}
	return out
}

func ack(t *testing.T, d bus.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack(%s): %v", d.Message().ID, err)
	}
}

func nack(t *testing.T, d bus.Delivery, opts bus.NackOptions) {
	t.Helper()
	if err := d.Nack(context.Background(), opts); err != nil {
		t.Fatalf("Nack(%s): %v", d.Message().ID, err)
	}
}

// messages builds n messages with bodies "<prefix>-<i>".
func messages(prefix string, n int) []*bus.Message {
	out := make([]*bus.Message, n)
	for i := range out {
		out[i] = bus.NewMessage(fmt.Appendf(nil, "%s-%d", prefix, i))
	}
	return out
}

// checkOnce reports messages of want missing from got, and duplicates.
func (s *suite) checkOnce(t *testing.T, want, got []*bus.Message) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range got {
		seen[m.ID]++
	}
	var missing, dup []string
	for _, m := range want {
		switch seen[m.ID] {
		case 0:
			missing = append(missing, string(m.Body))
		case 1:
		default:
			dup = append(dup, string(m.Body))
		}
		delete(seen, m.ID)
	}
	if len(dup) > 0 && len(missing) == 0 && len(seen) == 0 && s.cfg.AckedRedelivered != "" {
		t.Logf("%d of %d messages delivered more than once %v (%s)", len(dup), len(want), head(dup), s.cfg.AckedRedelivered)
		return
	}
	if len(missing) > 0 || len(dup) > 0 || len(seen) > 0 {
		t.Fatalf("got %d messages for %d published: %d missing %v, %d duplicated %v, %d unexpected",
			len(got), len(want), len(missing), head(missing), len(dup), head(dup), len(seen))
	}
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
