package rocketmq_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// clusterCtlEnv names scripts/clusters for the tests that stop and start
// nodes of the cluster it runs; scripts/cluster-test sets it.
const clusterCtlEnv = "OMNIBUS_CLUSTER_CTL"

// clusterCtl runs scripts/clusters with args.
func clusterCtl(t *testing.T, args ...string) {
	t.Helper()
	ctl := os.Getenv(clusterCtlEnv)
	out, err := exec.Command(ctl, args...).CombinedOutput()
	t.Logf("%s %v: %s", ctl, args, out)
	if err != nil {
		t.Fatalf("%s %v: %v", ctl, args, err)
	}
}

// TestMasterLoss kills the master of one broker group of a cluster of two
// groups (master + slave each): every send after it succeeds, on the other
// group, and a new group's subscription reads every message, those stored
// on the lost master from its slave.
func TestMasterLoss(t *testing.T) {
	if os.Getenv(clusterCtlEnv) == "" {
		t.Skipf("needs a cluster of scripts/clusters, named by %s (scripts/cluster-test sets it)", clusterCtlEnv)
	}
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
	clusterCtl(t, "stop", "rocketmq", "a0")
	t.Cleanup(func() { clusterCtl(t, "start", "rocketmq", "a0") })
	publish("after")

	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g", Prefetch: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
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
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for id, c := range got {
		if c > 1 {
			t.Errorf("message %s delivered %d times", id, c)
		}
	}
}
