package rabbitmq_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
)

// clusterCtlEnv names scripts/clusters for the tests that stop and start
// nodes of the cluster it runs; scripts/cluster-test sets it.
const clusterCtlEnv = "OMNIBUS_CLUSTER_CTL"

func clusterCtl(t *testing.T, args ...string) {
	t.Helper()
	ctl := os.Getenv(clusterCtlEnv)
	out, err := exec.Command(ctl, args...).CombinedOutput()
	t.Logf("%s %v: %s", ctl, args, out)
	if err != nil {
		t.Fatalf("%s %v: %v", ctl, args, err)
	}
}

// TestNodeLoss kills the node a Broker is connected to (the first of the
// URL's) in a cluster of three with quorum queues: the Broker reconnects
// to another node, a Publish that failed in the loss succeeds when called
// again, the subscription consumes again, and every confirmed message is
// delivered (a retried Publish or a delivery unsettled at the loss may
// come twice: at least once).
func TestNodeLoss(t *testing.T) {
	if os.Getenv(clusterCtlEnv) == "" {
		t.Skipf("needs a cluster of scripts/clusters, named by %s (scripts/cluster-test sets it)", clusterCtlEnv)
	}
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
	clusterCtl(t, "stop", "rabbitmq", "1")
	t.Cleanup(func() { clusterCtl(t, "start", "rabbitmq", "1") })
	publish("after")

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
			t.Fatalf("received %d of %d distinct messages (%v): missing %v", len(got), len(want), err, missing)
		}
		if _, ok := want[d.Message().ID]; !ok {
			t.Fatalf("unexpected message %q", d.Message().Body)
		}
		got[d.Message().ID]++
		d.Ack(ctx)
	}
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d messages, all delivered; %d publishes retried, %d deliveries repeated", len(want), retries, dups)
}
