package rabbitmq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// TestNodeLoss kills the node a Broker is connected to (the first of the
// URL's) in a cluster of three with quorum queues: the Broker reconnects
// to another node, a Publish that failed in the loss succeeds when called
// again, the subscription consumes again, and every confirmed message is
// delivered (a retried Publish or a delivery unsettled at the loss may
// come twice: at least once).
func TestNodeLoss(t *testing.T) {
	clusterCtl := brokertest.ClusterCtl(t)
	b := connect(t, rabbitmq.Options{URL: amqpURL(t), QueueType: "quorum"})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := "nodeloss-" + bus.NewID()
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g", Prefetch: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	want := map[string]string{}
	retries := 0
	publish := func(phase string) {
		for i := range 50 {
			m := bus.NewMessage(fmt.Appendf(nil, "%s-%d", phase, i))
			for {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				err := b.Publish(pctx, topic, m)
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("%s: publish %d never succeeded: %v", phase, i, err)
				}
				retries++
				t.Logf("%s: publish %d failed, again: %v", phase, i, err)
				time.Sleep(200 * time.Millisecond)
			}
			want[m.ID] = string(m.Body)
		}
	}
	publish("before")
	clusterCtl("stop", "rabbitmq", "1")
	t.Cleanup(func() { clusterCtl("start", "rabbitmq", "1") })
	publish("after")

	got := brokertest.ReceiveAll(ctx, t, sub, want)
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d messages, all delivered; %d publishes retried, %d deliveries repeated", len(want), retries, dups)
}
