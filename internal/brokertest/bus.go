package brokertest

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Subscribe opens a subscription that is closed when the test ends, and
// fails the test when it cannot.
func Subscribe(t testing.TB, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, topic, opts)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// Publish publishes msgs and fails the test when Publish fails.
func Publish(t testing.TB, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
}

// Receive waits up to within for a delivery and fails the test without
// one.
func Receive(t testing.TB, sub bus.Subscription, within time.Duration) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v (waited %v)", err, within)
	}
	return d
}

// Ack acknowledges d and fails the test when that fails.
func Ack(t testing.TB, d bus.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack(%s): %v", d.Message().ID, err)
	}
}

// ReceiveAll receives and acknowledges from sub until every message of
// want (ID to body) has been acknowledged, and returns how often each
// was. A delivery whose Ack fails (its channel lost in a failover, say)
// is not counted: the message must come again. Anything not in want, or
// the end of ctx first (naming the bodies missing), fails the test.
func ReceiveAll(ctx context.Context, t testing.TB, sub bus.Subscription, want map[string]string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for len(got) < len(want) {
		d, err := sub.Receive(ctx)
		if err != nil {
			var missing []string
			for id, body := range want {
				if got[id] == 0 {
					missing = append(missing, body)
				}
			}
			sort.Strings(missing)
			t.Fatalf("received %d of %d distinct messages (%v): missing %v", len(got), len(want), err, missing)
		}
		if _, ok := want[d.Message().ID]; !ok {
			t.Fatalf("unexpected message %q", d.Message().Body)
		}
		if err := d.Ack(ctx); err != nil {
			t.Logf("Ack of %q: %v; it must come again", d.Message().Body, err)
			continue
		}
		got[d.Message().ID]++
	}
	return got
}
