package rocketmq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// TestMasterLoss kills the master of one broker group of a cluster of two
// groups (master + slave each): every send after it succeeds, on the other
// group, and a new group's subscription reads every message, those stored
// on the lost master from its slave.
func TestMasterLoss(t *testing.T) {
	clusterCtl := brokertest.ClusterCtl(t)
	o := options(t)
	b := newBroker(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	groups, err := b.Cluster(ctx)
	if err != nil || len(groups) < 2 {
		t.Fatalf("Cluster = %v, %v: want two broker groups", groups, err)
	}
	topic := fmt.Sprintf("omnibus-test-masterloss-%d", time.Now().UnixNano())
	t.Cleanup(func() { b.Remove(context.Background(), topic, "g") })
	const n = 40
	want := map[string]string{} // ID → body
	publish := func(phase string) {
		for i := range n {
			m := bus.NewMessage(fmt.Appendf(nil, "%s-%d", phase, i))
			if err := b.Publish(ctx, topic, m); err != nil {
				t.Fatalf("%s: publish %d: %v", phase, i, err)
			}
			want[m.ID] = string(m.Body)
		}
	}
	publish("before")
	clusterCtl("stop", "rocketmq", "a0")
	t.Cleanup(func() { clusterCtl("start", "rocketmq", "a0") })
	publish("after")

	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g", Prefetch: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := brokertest.ReceiveAll(ctx, t, sub, want)
	for id, c := range got {
		if c > 1 {
			t.Errorf("message %s delivered %d times", id, c)
		}
	}
}
