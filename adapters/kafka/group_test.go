package kafka_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// keysOnPartitions returns, for each partition of a topic with n
// partitions, a key that Publish writes there.
func keysOnPartitions(n int) []string {
	keys := make([]string, n)
	for i, found := 0, 0; found < n; i++ {
		k := "key-" + strconv.Itoa(i)
		if p := kafka.Partition(k, n); keys[p] == "" {
			keys[p] = k
			found++
		}
	}
	return keys
}

// holdOnePerPartition publishes one message per partition and receives
// them all on sub, unsettled, by partition.
func holdOnePerPartition(t *testing.T, c bus.Publisher, sub bus.Subscription, topic string, keys []string) map[string]bus.Delivery {
	t.Helper()
	msgs := make([]*bus.Message, len(keys))
	for i, k := range keys {
		msgs[i] = &bus.Message{Key: k, Body: []byte("held " + k)}
	}
	publish(t, c, topic, msgs...)
	held := map[string]bus.Delivery{}
	for range keys {
		d := receive(t, sub, 20*time.Second)
		held[d.Message().Key] = d
	}
	return held
}

// In a cooperative rebalance only the partitions that move stop: a member
// joining makes the first give up one of its two partitions, whose
// unsettled delivery fails with ErrRevoked after DrainTimeout, while the
// delivery of the partition the first member keeps is settled as usual;
// with eager rebalancing both are given back.
func TestCooperativeRebalanceKeepsUnmovedPartitions(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		revoked  int
	}{{kafka.RebalanceCooperative, 1}, {kafka.RebalanceEager, 2}} {
		t.Run(tc.protocol, func(t *testing.T) {
			opts := testOptions(t)
			opts.Rebalance = tc.protocol
			opts.DrainTimeout = time.Second
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			topic := topicName(t)
			if _, err := adminClient(t).CreateTopic(ctx, 2, -1, nil, topic); err != nil {
				t.Fatal(err)
			}
			a := connect(t, opts)
			defer a.Close()
			group := bus.SubscribeOptions{Group: "g", Prefetch: 2}
			subA := subscribe(t, a, topic, group)
			held := holdOnePerPartition(t, a, subA, topic, keysOnPartitions(2))

			b := connect(t, opts)
			defer b.Close()
			subB := subscribe(t, b, topic, group)
			// The rebalance is over once b has joined; a message on each
			// partition shows where each went.
			after := holdOnePerPartition(t, a, mergeSubs(t, subA, subB), topic, keysOnPartitions(2))
			revoked := 0
			for k, d := range held {
				err := d.Ack(ctx)
				switch {
				case errors.Is(err, kafka.ErrRevoked):
					revoked++
				case err != nil:
					t.Fatalf("Ack of %s: %v", k, err)
				}
			}
			if revoked != tc.revoked {
				t.Fatalf("%d of the 2 held deliveries revoked, want %d", revoked, tc.revoked)
			}
			for _, d := range after {
				d.Ack(ctx)
			}
		})
	}
}

// mergeSubs receives from several subscriptions as one.
func mergeSubs(t *testing.T, subs ...bus.Subscription) bus.Subscription {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := make(chan bus.Delivery)
	for _, s := range subs {
		go func() {
			for {
				d, err := s.Receive(ctx)
				if err != nil {
					return
				}
				select {
				case out <- d:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return merged(out)
}

type merged chan bus.Delivery

func (m merged) Receive(ctx context.Context) (bus.Delivery, error) {
	select {
	case d := <-m:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (m merged) Close() error { return nil }

// rollingTopicEnv, when set, makes the test binary a consumer process of
// TestRollingRestartLosesNothing: it consumes the topic, prints the ID of
// each message it processed, and shuts down gracefully on SIGTERM.
const rollingTopicEnv = "OMNIBUS_KAFKA_ROLLING_TOPIC"

func rollingChild(topic string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c, err := kafka.New(ctx, optionsFor(strings.Split(os.Getenv(brokertest.KafkaEnv), ",")))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer c.Close()
	var mu sync.Mutex
	cons, err := bus.NewConsumer(c, bus.ConsumerConfig{Topic: topic, Concurrency: 4, Subscribe: bus.SubscribeOptions{Group: "rolling"}},
		func(_ context.Context, m *bus.Message) error {
			mu.Lock()
			fmt.Println("done", m.ID)
			mu.Unlock()
			return nil
		})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := cons.Run(ctx); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Three consumer processes restarted one after another while messages
// keep coming (each stopped with SIGTERM, shutting down gracefully, and a
// new process started in its place) lose no message: every one published
// is processed.
func TestRollingRestartLosesNothing(t *testing.T) {
	opts := testOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := topicName(t)
	if _, err := adminClient(t).CreateTopic(ctx, 6, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	pub := connect(t, opts)
	defer pub.Close()

	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	start := func() *exec.Cmd {
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), rollingTopicEnv+"="+topic, brokertest.KafkaEnv+"="+strings.Join(brokers(t), ","))
		out, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			lines := bufio.NewScanner(out)
			for lines.Scan() {
				if id, ok := strings.CutPrefix(lines.Text(), "done "); ok {
					mu.Lock()
					seen[id]++
					mu.Unlock()
				} else {
					t.Errorf("consumer process: %s", lines.Text())
				}
			}
		}()
		return child
	}
	stop := func(c *exec.Cmd) {
		c.Process.Signal(syscall.SIGTERM)
		if err := c.Wait(); err != nil {
			t.Errorf("consumer process after SIGTERM: %v", err)
		}
	}
	procs := []*exec.Cmd{start(), start(), start()}
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
		}
	}()

	var sent []string
	publishSome := func(n int) {
		msgs := make([]*bus.Message, n)
		for i := range msgs {
			msgs[i] = bus.NewMessage([]byte(fmt.Sprint(len(sent) + i)))
		}
		publish(t, pub, topic, msgs...)
		for _, m := range msgs {
			sent = append(sent, m.ID)
		}
	}
	publishSome(200)
	for i := range procs {
		time.Sleep(time.Second)
		stop(procs[i])
		publishSome(200)
		procs[i] = start()
		publishSome(200)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		mu.Lock()
		missing := 0
		for _, id := range sent {
			if seen[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never processed across the rolling restart", missing, len(sent))
		}
	}
	for _, p := range procs {
		stop(p)
	}
	mu.Lock()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("%d messages, %d processed twice or more", len(sent), dups)
}

// A static member (Options.InstanceID) that restarts within the session
// timeout gets its partitions back without a rebalance: the other
// member's unsettled delivery is never revoked, and the restarted member
// receives the messages of its partition again.
func TestStaticMemberRestartsWithoutRebalance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := topicName(t)
	if _, err := adminClient(t).CreateTopic(ctx, 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	static := func(id string) kafka.Options {
		o := testOptions(t)
		o.InstanceID = id
		o.SessionTimeout = 20 * time.Second
		o.DrainTimeout = time.Second
		return o
	}
	group := bus.SubscribeOptions{Group: "static", Prefetch: 1}
	a := connect(t, static("a-"+topic))
	subA := subscribe(t, a, topic, group)
	b := connect(t, static("b-"+topic))
	defer b.Close()
	subB := subscribe(t, b, topic, group)

	// One message on each partition: each member receives one and holds
	// it, which says who has which partition.
	keys := keysOnPartitions(2)
	for _, k := range keys {
		publish(t, b, topic, &bus.Message{Key: k, Body: []byte("first")})
	}
	t0 := time.Now()
	da := receive(t, subA, 20*time.Second)
	t.Logf("member a received %q after %v", da.Message().Key, time.Since(t0))
	db := receive(t, subB, 20*time.Second)
	t.Logf("member b received %q after %v", db.Message().Key, time.Since(t0))
	aKey := da.Message().Key
	if err := da.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	subA.Close()
	a.Close()
	a2 := connect(t, static("a-"+topic))
	defer a2.Close()
	subA2 := subscribe(t, a2, topic, group)
	publish(t, b, topic, &bus.Message{Key: aKey, Body: []byte("after the restart")})
	d := receive(t, subA2, 20*time.Second)
	if string(d.Message().Body) != "after the restart" {
		t.Fatalf("restarted member received %q (attempt %d)", d.Message().Body, d.Message().Attempt)
	}
	d.Ack(ctx)
	if err := db.Ack(ctx); err != nil {
		t.Fatalf("the other member's delivery after the restart: %v; want no rebalance to have revoked it", err)
	}
}

// Partitions added to a topic are consumed: the group notices them at its
// next metadata refresh and assigns them.
func TestAddedPartitionsAreConsumed(t *testing.T) {
	opts := testOptions(t)
	opts.MetadataMaxAge = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := topicName(t)
	adm := adminClient(t)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	c := connect(t, opts)
	defer c.Close()
	sub := subscribe(t, c, topic, bus.SubscribeOptions{})
	if _, err := adm.UpdatePartitions(ctx, 3, topic); err != nil {
		t.Fatal(err)
	}
	// The brokers learn of the new partitions a moment later; until then
	// a write to partition 2 is refused.
	cl, err := franz.NewClient(franz.SeedBrokers(brokers(t)...), franz.RequiredAcks(franz.AllISRAcks()),
		franz.RecordPartitioner(franz.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		err := cl.ProduceSync(ctx, &franz.Record{Topic: topic, Partition: 2, Value: []byte("on a new partition")}).FirstErr()
		if err == nil {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
			cl.ForceMetadataRefresh()
		case <-ctx.Done():
			t.Fatalf("writing to the new partition: %v", err)
		}
	}
	d := receive(t, sub, 30*time.Second)
	if string(d.Message().Body) != "on a new partition" {
		t.Fatalf("received %q", d.Message().Body)
	}
	d.Ack(ctx)
}
