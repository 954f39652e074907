package redisstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// A group's keys live in its topic's hash slot on a cluster, and the hash
// slots this package computes are the server's.
func TestClusterKeysShareTheTopicsSlot(t *testing.T) {
	o := options(t)
	if !o.Cluster {
		t.Skip("needs a Redis Cluster (OMNIBUS_REDIS_URL=redis+cluster://...)")
	}
	b := newBroker(t, o)
	ctx := context.Background()
	for _, topic := range []string{topicName(t), "{" + topicName(t) + "}.eu", "tasks:sms", "a{b", "x"} {
		sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
		sub.Close()
		want, err := b.Client().ClusterKeySlot(ctx, topic).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redisconn.Slot(topic); int64(got) != want {
			t.Errorf("Slot(%q) = %d, the server says %d", topic, got, want)
		}
		retry := retryStream(o, topic, "g")
		if n, err := b.Client().Exists(ctx, retry).Result(); err != nil || n != 1 {
			t.Errorf("retry stream %q: exists %d, %v; want the documented key", retry, n, err)
		}
		if slot, err := b.Client().ClusterKeySlot(ctx, retry).Result(); err != nil || slot != want {
			t.Errorf("retry stream %q in slot %d (%v), want the topic's %d", retry, slot, err, want)
		}
		if err := b.Remove(ctx, topic, "g"); err != nil {
			t.Fatal(err)
		}
	}
	// A topic whose hashed part holds a "}" cannot share its slot.
	_, err := b.Subscribe(ctx, "x}y", bus.SubscribeOptions{Group: "g"})
	if !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Subscribe(x}y) = %v, want ErrInvalidMessage", err)
	}
}

// A message dead-lettered on a cluster reaches the dead-letter stream,
// whether that stream shares the topic's slot ({topic}.dlq) or not.
func TestClusterDeadLetters(t *testing.T) {
	o := options(t)
	if !o.Cluster {
		t.Skip("needs a Redis Cluster (OMNIBUS_REDIS_URL=redis+cluster://...)")
	}
	b := newBroker(t, o)
	for _, topic := range []string{topicName(t), "{" + topicName(t) + "}"} {
		dlq := bus.DeadLetterTopic(topic)
		same := redisconn.Slot(dlq) == redisconn.Slot(topic)
		sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
		dead := subscribe(t, b, dlq, bus.SubscribeOptions{Group: "g"})
		m := bus.NewMessage([]byte("to the dead letters"))
		publish(t, b, topic, m)
		nack(t, receive(t, sub), bus.NackOptions{DeadLetter: true})
		d := receive(t, dead)
		if d.Message().ID != m.ID || string(d.Message().Body) != "to the dead letters" {
			t.Fatalf("dead-letter stream of %q (same slot %v) gave %q", topic, same, d.Message().Body)
		}
		ack(t, d)
		expectNothing(t, sub, 300*time.Millisecond)
		if err := b.Remove(context.Background(), topic, "g"); err != nil {
			t.Fatal(err)
		}
	}
}

// With WaitReplicas, Publish succeeds when that many replicas have the
// messages and fails with ErrNotReplicated when fewer do.
func TestWaitReplicas(t *testing.T) {
	o := options(t)
	o.WaitTimeout = 200 * time.Millisecond
	ctx := context.Background()
	probe := newBroker(t, o)
	replicas, err := connectedReplicas(ctx, probe.Client())
	if err != nil {
		t.Fatal(err)
	}
	topic := topicName(t)
	defer probe.Remove(ctx, topic)
	if replicas > 0 {
		o.WaitReplicas = replicas
		b := newBroker(t, o)
		publish(t, b, topic, bus.NewMessage([]byte("one")))
		publish(t, b, topic, bus.NewMessage([]byte("two")), bus.NewMessage([]byte("three")))
	}
	o.WaitReplicas = replicas + 1
	b := newBroker(t, o)
	for _, n := range []int{1, 3} {
		msgs := make([]*bus.Message, n)
		for i := range msgs {
			msgs[i] = bus.NewMessage([]byte("unreplicated " + strconv.Itoa(i)))
		}
		err := b.Publish(ctx, topic, msgs...)
		if !errors.Is(err, redisstream.ErrNotReplicated) {
			t.Fatalf("Publish of %d with %d replicas, waiting for %d: %v, want ErrNotReplicated", n, replicas, o.WaitReplicas, err)
		}
	}
}

// connectedReplicas is the fewest replicas a master of rdb has.
func connectedReplicas(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	var mu sync.Mutex
	fewest := -1
	one := func(ctx context.Context, c *redis.Client) error {
		info, err := c.InfoMap(ctx, "replication").Result()
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(info["Replication"]["connected_slaves"])
		if err != nil {
			return fmt.Errorf("connected_slaves: %w", err)
		}
		mu.Lock()
		if fewest < 0 || n < fewest {
			fewest = n
		}
		mu.Unlock()
		return nil
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, one)
		return fewest, err
	}
	err := one(ctx, rdb.(*redis.Client))
	return fewest, err
}

// A failover — a replica taking over from the master, by CLUSTER FAILOVER
// on a cluster or SENTINEL FAILOVER behind Sentinel — is ridden through:
// publishing goes on within seconds, and every message whose Publish
// succeeded is received.
func TestFailoverLosesNothing(t *testing.T) {
	o := options(t)
	if !o.Cluster && o.MasterName == "" {
		t.Skip("needs a Redis Cluster or Sentinel (OMNIBUS_REDIS_URL=redis+cluster:// or redis+sentinel://)")
	}
	testFailover(t, o, failover)
}

// The master of the topic's slot (or behind Sentinel) killed with SIGKILL
// and started again 5 s later is ridden through the same way: its
// replica takes over once the cluster or the Sentinels find it gone,
// publishing goes on, and every message whose Publish succeeded (with the
// URL's wait=1: on a replica too) is received. With wait=1 and one
// replica per master (the cluster of scripts/clusters) the new master has
// no replica until the killed node is back as one, so its writes fail
// with ErrNotReplicated until then.
func TestMasterKillLosesNothing(t *testing.T) {
	o := options(t)
	if !o.Cluster && o.MasterName == "" {
		t.Skip("needs a Redis Cluster or Sentinel (OMNIBUS_REDIS_URL=redis+cluster:// or redis+sentinel://)")
	}
	ctl := brokertest.ClusterCtl(t)
	testFailover(t, o, func(ctx context.Context, b *redisstream.Broker, o redisstream.Options, topic string) error {
		addr, err := masterAddr(ctx, b, o, topic)
		if err != nil {
			return err
		}
		node, err := clusterNode(addr)
		if err != nil {
			return err
		}
		ctl("stop", "redis", node)
		t.Cleanup(func() { ctl("start", "redis", node) }) // when the test fails before the start
		time.Sleep(5 * time.Second)
		ctl("start", "redis", node)
		return nil
	})
}

// clusterNode names the scripts/clusters node at addr: 10.77.0.2N is
// cluster node cN, 10.77.0.3N the Sentinel set's server sN.
func clusterNode(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	var last int
	if _, err := fmt.Sscanf(host, "10.77.0.%d", &last); err != nil {
		return "", fmt.Errorf("%s is not a node of scripts/clusters", addr)
	}
	switch {
	case last > 20 && last <= 26:
		return fmt.Sprintf("c%d", last-20), nil
	case last > 30 && last <= 33:
		return fmt.Sprintf("s%d", last-30), nil
	}
	return "", fmt.Errorf("%s is not a Redis node of scripts/clusters", addr)
}

// masterAddr returns the address of the master that holds topic.
func masterAddr(ctx context.Context, b *redisstream.Broker, o redisstream.Options, topic string) (string, error) {
	if cc, ok := b.Client().(*redis.ClusterClient); ok {
		master, err := cc.MasterForKey(ctx, topic)
		if err != nil {
			return "", err
		}
		return master.Options().Addr, nil
	}
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: o.Addrs[0], Password: o.SentinelPassword})
	defer sentinel.Close()
	addr, err := sentinel.GetMasterAddrByName(ctx, o.MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(addr[0], addr[1]), nil
}

// testFailover publishes and consumes all along while cause makes the
// topic's master give way, and checks that publishing goes on and that
// every message whose Publish succeeded is received.
func testFailover(t *testing.T, o redisstream.Options, cause func(context.Context, *redisstream.Broker, redisstream.Options, string) error) {
	o.VisibilityTimeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := newBroker(t, o)
	topic := "{" + topicName(t) + "}"
	defer b.Remove(context.Background(), topic, "g")
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g", Prefetch: 16})

	var mu sync.Mutex
	sent := map[string]bool{}
	var failed, lastErr int
	var lastError error
	// failAt: when the last failure returned; okAt: when the first
	// publish started after it succeeded (zero while none has).
	var failAt, okAt, lastOK time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			m := bus.NewMessage([]byte(strconv.Itoa(i)))
			start := time.Now()
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			err := b.Publish(pctx, topic, m)
			pcancel()
			mu.Lock()
			if err == nil {
				sent[m.ID] = true
				lastOK = time.Now()
				if okAt.IsZero() && start.After(failAt) {
					okAt = time.Now()
				}
			} else {
				failed++
				lastErr = i
				lastError = err
				failAt, okAt = time.Now(), time.Time{}
			}
			mu.Unlock()
		}
	}()
	seen := map[string]bool{}
	var seenMu sync.Mutex
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			d, err := sub.Receive(ctx)
			if err != nil {
				return
			}
			seenMu.Lock()
			seen[d.Message().ID] = true
			seenMu.Unlock()
			d.Ack(ctx)
		}
	}()

	time.Sleep(time.Second)
	t0 := time.Now()
	if err := cause(ctx, b, o, topic); err != nil {
		t.Fatal(err)
	}
	// Publishing goes on after the failover: a publish started after the
	// last failure succeeded, and nothing failed for 2 s since.
	for {
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		ok, fAt, latest, f, last := okAt, failAt, lastOK, failed, lastError
		mu.Unlock()
		recovered := !ok.IsZero() && time.Since(ok) > 2*time.Second
		if fAt.Before(t0) { // nothing failed since the fault
			recovered = latest.After(t0.Add(2 * time.Second))
		}
		if recovered && time.Since(t0) > 3*time.Second {
			break
		}
		if time.Since(t0) > 45*time.Second {
			t.Fatalf("publishing still fails %v after the failover: %d failures, last %v", time.Since(t0), f, last)
		}
	}
	close(stop)
	<-done
	mu.Lock()
	resumed := "no publish failed after the fault"
	if failAt.After(t0) {
		resumed = fmt.Sprintf("the first success after the last failure %v after the fault", okAt.Sub(t0).Round(time.Millisecond))
	}
	t.Logf("%d published, %d publishes failed around the failover (last #%d: %v); %s", len(sent), failed, lastErr, lastError, resumed)
	mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		seenMu.Lock()
		var missing int
		for id := range sent {
			if !seen[id] {
				missing++
			}
		}
		seenMu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d published messages never received", missing, len(sent))
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	<-recvDone
}

// failover makes a replica of topic's master take over, and waits until
// the old master reports itself a replica.
func failover(ctx context.Context, b *redisstream.Broker, o redisstream.Options, topic string) error {
	if cc, ok := b.Client().(*redis.ClusterClient); ok {
		master, err := cc.MasterForKey(ctx, topic)
		if err != nil {
			return err
		}
		info, err := master.InfoMap(ctx, "replication").Result()
		if err != nil {
			return err
		}
		// slave0:ip=10.77.0.24,port=6379,state=online,...
		fields := map[string]string{}
		for kv := range strings.SplitSeq(info["Replication"]["slave0"], ",") {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		ip, port := fields["ip"], fields["port"]
		if ip == "" {
			return fmt.Errorf("no replica of %s: %v", master.Options().Addr, info["Replication"])
		}
		replica := redis.NewClient(&redis.Options{Addr: ip + ":" + port, Username: o.Username, Password: o.Password})
		defer replica.Close()
		if err := replica.ClusterFailover(ctx).Err(); err != nil {
			return fmt.Errorf("CLUSTER FAILOVER on %s:%s: %w", ip, port, err)
		}
		return waitRole(ctx, master, "slave")
	}
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: o.Addrs[0], Password: o.SentinelPassword})
	defer sentinel.Close()
	addr, err := sentinel.GetMasterAddrByName(ctx, o.MasterName).Result()
	if err != nil {
		return err
	}
	if err := sentinel.Failover(ctx, o.MasterName).Err(); err != nil {
		return fmt.Errorf("SENTINEL FAILOVER %s: %w", o.MasterName, err)
	}
	old := redis.NewClient(&redis.Options{Addr: addr[0] + ":" + addr[1], Username: o.Username, Password: o.Password})
	defer old.Close()
	return waitRole(ctx, old, "slave")
}

func waitRole(ctx context.Context, c *redis.Client, role string) error {
	for {
		info, err := c.InfoMap(ctx, "replication").Result()
		if err == nil && info["Replication"]["role"] == role {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not become a %s: %v", c.Options().Addr, role, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
