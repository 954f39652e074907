package kafka_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func topicName(t testing.TB) string { return brokertest.Name(t) }

func subscribe(t testing.TB, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	return brokertest.Subscribe(t, b, topic, opts)
}

func publish(t testing.TB, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	brokertest.Publish(t, p, topic, msgs...)
}

func receive(t testing.TB, sub bus.Subscription, within time.Duration) bus.Delivery {
	t.Helper()
	return brokertest.Receive(t, sub, within)
}

func expectNothing(t testing.TB, sub bus.Subscription, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if d, err := sub.Receive(ctx); err == nil {
		t.Fatalf("unexpected delivery %q (attempt %d)", d.Message().Body, d.Message().Attempt)
	}
}

// keyed returns n messages with one key, bodies "0".."n-1": one partition,
// in order.
func keyed(key string, n int) []*bus.Message {
	out := make([]*bus.Message, n)
	for i := range out {
		out[i] = bus.NewMessage([]byte(strconv.Itoa(i)))
		out[i].Key = key
	}
	return out
}

// A rebalance waits for in-flight deliveries of the partitions it moves:
// acknowledged in time, they are committed and go to no one else. Eager
// rebalancing moves every partition, the one of key "k" too.
func TestRebalanceFinishesInFlight(t *testing.T) {
	opts := testOptions(t)
	opts.Rebalance = kafka.RebalanceEager
	a := connect(t, opts)
	defer a.Close()
	topic := topicName(t)
	group := bus.SubscribeOptions{Group: "g", Prefetch: 2}
	subA := subscribe(t, a, topic, group)
	msgs := keyed("k", 4)
	publish(t, a, topic, msgs...)
	d0, d1 := receive(t, subA, 10*time.Second), receive(t, subA, 10*time.Second)

	b := connect(t, opts)
	defer b.Close()
	joined := make(chan bus.Subscription, 1)
	go func() { joined <- subscribe(t, b, topic, group) }()
	// b's join makes a give up its partitions, which waits for d0 and d1.
	time.Sleep(500 * time.Millisecond)
	for _, d := range []bus.Delivery{d0, d1} {
		if err := d.Ack(context.Background()); err != nil {
			t.Fatalf("Ack during the rebalance: %v", err)
		}
	}
	subB := <-joined

	got, _ := drain(t, 3*time.Second, subA, subB)
	if len(got) != 2 || got[msgs[2].ID] != 1 || got[msgs[3].ID] != 1 {
		t.Fatalf("after the rebalance got %v, want messages 2 and 3 once each", got)
	}
}

// Deliveries still unsettled when DrainTimeout passes are given back: the
// new owner receives them as second attempts, and the old delivery cannot
// be settled. Eager rebalancing moves every partition.
func TestRebalanceGivesBackUnsettled(t *testing.T) {
	opts := testOptions(t)
	opts.Rebalance = kafka.RebalanceEager
	a := connect(t, opts)
	defer a.Close()
	topic := topicName(t)
	group := bus.SubscribeOptions{Group: "g", Prefetch: 2}
	subA := subscribe(t, a, topic, group)
	msgs := keyed("k", 2)
	publish(t, a, topic, msgs...)
	d0 := receive(t, subA, 10*time.Second)
	receive(t, subA, 10*time.Second)

	b := connect(t, opts)
	defer b.Close()
	start := time.Now()
	subB := subscribe(t, b, topic, group)
	if waited := time.Since(start); waited < opts.DrainTimeout/2 {
		t.Errorf("the rebalance took %v; it should have waited about DrainTimeout (%v) for the deliveries", waited, opts.DrainTimeout)
	}
	if err := d0.Ack(context.Background()); !errors.Is(err, kafka.ErrRevoked) {
		t.Fatalf("Ack after the partition moved: %v, want ErrRevoked", err)
	}
	got, lastAttempt := drain(t, 1500*time.Millisecond, subA, subB)
	for _, m := range msgs {
		if got[m.ID] != 1 {
			t.Fatalf("redeliveries %v: want each message once more", got)
		}
	}
	if d0.Message().Attempt != 1 || lastAttempt[d0.Message().ID] != 2 {
		t.Fatalf("attempts %v, want the redeliveries to be attempt 2", lastAttempt)
	}
}

// drain acknowledges everything the subscriptions deliver until they are
// quiet for quiet, and returns per message ID how many deliveries it saw
// and the Attempt of the last.
func drain(t testing.TB, quiet time.Duration, subs ...bus.Subscription) (got, lastAttempt map[string]int) {
	var mu sync.Mutex
	got, lastAttempt = map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), quiet)
				d, err := sub.Receive(ctx)
				cancel()
				if err != nil {
					return
				}
				d.Ack(context.Background())
				mu.Lock()
				got[d.Message().ID]++
				lastAttempt[d.Message().ID] = d.Message().Attempt
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got, lastAttempt
}

// The committed offset never passes an unsettled delivery, however many
// later ones were acknowledged.
func TestCommitStopsAtFirstUnsettled(t *testing.T) {
	opts := testOptions(t)
	topic := topicName(t)
	group := bus.SubscribeOptions{Group: "g", Prefetch: 10}
	msgs := keyed("k", 10)
	func() {
		c := connect(t, opts)
		defer c.Close()
		sub := subscribe(t, c, topic, group)
		publish(t, c, topic, msgs...)
		for i := range msgs {
			d := receive(t, sub, 10*time.Second)
			if i != 3 {
				if err := d.Ack(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(3 * opts.CommitInterval)
	}()

	c := connect(t, opts)
	defer c.Close()
	sub := subscribe(t, c, topic, group)
	for i := 3; i < len(msgs); i++ {
		d := receive(t, sub, 10*time.Second)
		m := d.Message()
		if m.ID != msgs[i].ID || m.Attempt != 2 {
			t.Fatalf("redelivery %q attempt %d, want %q attempt 2", m.Body, m.Attempt, msgs[i].Body)
		}
		d.Ack(context.Background())
	}
	expectNothing(t, sub, 500*time.Millisecond)
}

// A retry goes through the group's own retry topic: other groups see the
// message once.
func TestRetriesStayInGroup(t *testing.T) {
	c := connect(t, testOptions(t))
	defer c.Close()
	topic := topicName(t)
	a := subscribe(t, c, topic, bus.SubscribeOptions{Group: "a"})
	b := subscribe(t, c, topic, bus.SubscribeOptions{Group: "b"})
	m := bus.NewMessage([]byte("once for b"))
	publish(t, c, topic, m)

	d := receive(t, a, 10*time.Second)
	if err := d.Nack(context.Background(), bus.NackOptions{}); err != nil {
		t.Fatal(err)
	}
	if d = receive(t, a, 10*time.Second); d.Message().ID != m.ID || d.Message().Attempt != 2 {
		t.Fatalf("group a got %q attempt %d, want the retry", d.Message().Body, d.Message().Attempt)
	}
	d.Ack(context.Background())
	d = receive(t, b, 10*time.Second)
	d.Ack(context.Background())
	expectNothing(t, b, time.Second)
}

// BlockingRetry retries in place: nothing after the failed message is
// delivered before it succeeds or is dead-lettered.
func TestBlockingRetryKeepsOrder(t *testing.T) {
	opts := testOptions(t)
	opts.BlockingRetry = true
	c := connect(t, opts)
	defer c.Close()
	topic := topicName(t)
	sub := subscribe(t, c, topic, bus.SubscribeOptions{Prefetch: 5, MaxAttempts: 3})
	dlq := subscribe(t, c, topic+".dlq", bus.SubscribeOptions{})
	msgs := keyed("k", 4)
	publish(t, c, topic, msgs...)

	next := func(want int, attempt int) bus.Delivery {
		t.Helper()
		d := receive(t, sub, 10*time.Second)
		if m := d.Message(); m.ID != msgs[want].ID || m.Attempt != attempt {
			t.Fatalf("got %q attempt %d, want %q attempt %d", m.Body, m.Attempt, msgs[want].Body, attempt)
		}
		return d
	}
	next(0, 1).Ack(context.Background())
	const delay = 400 * time.Millisecond
	start := time.Now()
	next(1, 1).Nack(context.Background(), bus.NackOptions{Delay: delay})
	d := next(1, 2)
	if waited := time.Since(start); waited < delay {
		t.Fatalf("redelivered after %v, want a delay of %v", waited, delay)
	}
	d.Nack(context.Background(), bus.NackOptions{})
	next(1, 3).Nack(context.Background(), bus.NackOptions{Reason: errors.New("still broken")})
	dead := receive(t, dlq, 10*time.Second)
	if dead.Message().ID != msgs[1].ID || dead.Message().Headers.Get(bus.HeaderAttempts) != "3" {
		t.Fatalf("dead letter %q with attempts %q", dead.Message().Body, dead.Message().Headers.Get(bus.HeaderAttempts))
	}
	dead.Ack(context.Background())
	next(2, 1).Ack(context.Background())
	next(3, 1).Ack(context.Background())
}

// With BlockingRetry the commit metadata carries the attempts of a message
// retried in place, so another member continues the count.
func TestBlockingRetryCountSurvivesClose(t *testing.T) {
	opts := testOptions(t)
	opts.BlockingRetry = true
	topic := topicName(t)
	group := bus.SubscribeOptions{Group: "g", MaxAttempts: 10}
	msgs := keyed("k", 1)
	func() {
		c := connect(t, opts)
		defer c.Close()
		sub := subscribe(t, c, topic, group)
		publish(t, c, topic, msgs...)
		receive(t, sub, 10*time.Second).Nack(context.Background(), bus.NackOptions{})
		receive(t, sub, 10*time.Second).Nack(context.Background(), bus.NackOptions{Delay: time.Hour})
	}()
	c := connect(t, opts)
	defer c.Close()
	sub := subscribe(t, c, topic, group)
	if d := receive(t, sub, 10*time.Second); d.Message().Attempt != 3 {
		t.Fatalf("after two failed attempts and a restart, Attempt = %d, want 3", d.Message().Attempt)
	}
}

// The child process of TestCrashedMemberRedelivered: it takes deliveries
// and dies without settling them or leaving the group.
func crashChild() {
	topic := os.Getenv("OMNIBUS_KAFKA_CRASH_TOPIC")
	addrs := strings.Split(os.Getenv(brokertest.KafkaEnv), ",")
	if addrs[0] == "" {
		addrs = []string{brokertest.DefaultKafkaAddr}
	}
	opts := optionsFor(addrs)
	c, err := kafka.New(context.Background(), opts)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	sub, err := c.Subscribe(context.Background(), topic, bus.SubscribeOptions{Group: "g", Prefetch: 3})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("subscribed")
	for range 3 {
		if _, err := sub.Receive(context.Background()); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
	// Let a periodic commit record how far the partition was handed out.
	time.Sleep(5 * opts.CommitInterval)
	fmt.Println("holding")
	select {}
}

func TestMain(m *testing.M) {
	if os.Getenv("OMNIBUS_KAFKA_CRASH_TOPIC") != "" {
		crashChild()
	}
	if topic := os.Getenv(rollingTopicEnv); topic != "" {
		rollingChild(topic)
	}
	os.Exit(m.Run())
}

// A member that dies holding deliveries loses its partitions when its
// session times out; the survivor receives them as second attempts.
func TestCrashedMemberRedelivered(t *testing.T) {
	opts := testOptions(t)
	topic := topicName(t)
	c := connect(t, opts)
	defer c.Close()

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "OMNIBUS_KAFKA_CRASH_TOPIC="+topic)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	lines := bufio.NewScanner(out)
	await := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("child said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	await("subscribed")
	msgs := keyed("k", 3)
	publish(t, c, topic, msgs...)
	await("holding")
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	killed := time.Now()

	sub := subscribe(t, c, topic, bus.SubscribeOptions{Group: "g", Prefetch: 3})
	wait := opts.SessionTimeout + opts.HeartbeatInterval
	for i := range msgs {
		d := receive(t, sub, wait+10*time.Second)
		if m := d.Message(); m.ID != msgs[i].ID || m.Attempt != 2 {
			t.Fatalf("redelivered %q attempt %d, want %q attempt 2", m.Body, m.Attempt, msgs[i].Body)
		}
		d.Ack(context.Background())
	}
	t.Logf("redelivered %v after the crash (session timeout %v)", time.Since(killed).Round(10*time.Millisecond), opts.SessionTimeout)
}

// A produce refused for one partition fails only that partition's
// messages.
func TestPartialFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := topicName(t)
	// The topic refuses records over 2000 bytes; the client's own limit is
	// larger, so the broker is the one to refuse.
	limit := "2000"
	if _, err := adminClient(t).CreateTopic(ctx, 2, -1, map[string]*string{"max.message.bytes": &limit}, topic); err != nil {
		t.Fatal(err)
	}
	// Two keys on different partitions.
	var keys [2]string
	for i, found := 0, 0; found < 2; i++ {
		k := "key-" + strconv.Itoa(i)
		p := kafka.Partition(k, 2)
		if keys[p] == "" {
			keys[p] = k
			found++
		}
	}
	small := &bus.Message{Key: keys[0], Body: []byte("small")}
	// Random bytes: compression cannot bring the record under the limit.
	big := &bus.Message{Key: keys[1], Body: make([]byte, 5000)}
	rand.Read(big.Body)
	c := connect(t, testOptions(t))
	defer c.Close()
	sub := subscribe(t, c, topic, bus.SubscribeOptions{})
	err := c.Publish(ctx, topic, small, big)
	var pe *bus.PublishError
	if !errors.As(err, &pe) || len(pe.Unconfirmed) != 1 || pe.Unconfirmed[0] != 1 {
		t.Fatalf("Publish = %v, want a PublishError with message 1 unconfirmed", err)
	}
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Errorf("PublishError wraps %v, want the broker's MessageSizeTooLarge", pe.Err)
	}
	d := receive(t, sub, 10*time.Second)
	if d.Message().ID != small.ID {
		t.Fatalf("received %q, want the confirmed message", d.Message().Body)
	}
	d.Ack(ctx)
}

// Records carry the publish time to the nanosecond and omnibus's own
// headers stay out of Message.Headers; records from other producers get a
// positional ID that their retries keep.
func TestRecordMapping(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, testOptions(t))
	defer c.Close()
	topic := topicName(t)
	sub := subscribe(t, c, topic, bus.SubscribeOptions{})

	at := time.Unix(1700000000, 123456789)
	m := &bus.Message{Body: []byte("x"), PublishedAt: at, Headers: bus.Headers{"h": "v"}}
	publish(t, c, topic, m)
	d := receive(t, sub, 10*time.Second)
	got := d.Message()
	if !got.PublishedAt.Equal(at) {
		t.Errorf("PublishedAt = %v, want %v exactly", got.PublishedAt, at)
	}
	if len(got.Headers) != 1 || got.Headers.Get("h") != "v" {
		t.Errorf("Headers = %v, want only h=v", got.Headers)
	}
	d.Ack(ctx)

	sent := time.UnixMilli(time.Now().UnixMilli())
	produceRaw(t, ctx, &franz.Record{Topic: topic, Value: []byte("foreign"), Timestamp: sent})
	d = receive(t, sub, 10*time.Second)
	got = d.Message()
	if !strings.HasPrefix(got.ID, topic+"/") || !got.PublishedAt.Equal(sent) || got.Attempt != 1 {
		t.Fatalf("foreign record: id %q publishedAt %v attempt %d", got.ID, got.PublishedAt, got.Attempt)
	}
	d.Nack(ctx, bus.NackOptions{})
	d = receive(t, sub, 10*time.Second)
	if d.Message().ID != got.ID || !d.Message().PublishedAt.Equal(sent) || d.Message().Attempt != 2 {
		t.Fatalf("retry of a foreign record: id %q publishedAt %v attempt %d", d.Message().ID, d.Message().PublishedAt, d.Message().Attempt)
	}
	d.Ack(ctx)
}

func TestNoTopicCreation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := testOptions(t)
	opts.NoTopicCreation = true
	c := connect(t, opts)
	defer c.Close()
	missing := topicName(t)
	if err := c.Publish(ctx, missing, bus.NewMessage([]byte("x"))); !errors.Is(err, kafka.ErrNoTopic) {
		t.Fatalf("Publish to a missing topic: %v, want ErrNoTopic", err)
	}
	if _, err := c.Subscribe(ctx, missing, bus.SubscribeOptions{}); !errors.Is(err, kafka.ErrNoTopic) {
		t.Fatalf("Subscribe to a missing topic: %v, want ErrNoTopic", err)
	}

	// A topic created a moment ago by someone else is found.
	fresh := topicName(t)
	res, err := adminClient(t).CreateTopics(ctx, 1, -1, nil, fresh, kafka.RetryTopic(fresh, bus.DefaultGroup))
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, c, fresh, bus.SubscribeOptions{})
	publish(t, c, fresh, bus.NewMessage([]byte("x")))
	receive(t, sub, 10*time.Second).Ack(ctx)
}

// With BlockingRetry only the failed message's key waits; other keys on
// the same partition go on.
func TestBlockingRetryOtherKeysGoOn(t *testing.T) {
	opts := testOptions(t)
	opts.BlockingRetry = true
	c := connect(t, opts)
	defer c.Close()
	topic := topicName(t)
	sub := subscribe(t, c, topic, bus.SubscribeOptions{Prefetch: 3})
	// Two keys on one partition of the default three.
	var keys []string
	want := kafka.Partition("key-0", 3)
	for i := 0; len(keys) < 2; i++ {
		k := "key-" + strconv.Itoa(i)
		if kafka.Partition(k, 3) == want {
			keys = append(keys, k)
		}
	}
	a0, a1, b0 := &bus.Message{Key: keys[0], Body: []byte("a0")}, &bus.Message{Key: keys[0], Body: []byte("a1")}, &bus.Message{Key: keys[1], Body: []byte("b0")}
	publish(t, c, topic, a0, a1, b0)

	d := receive(t, sub, 10*time.Second)
	if d.Message().ID != a0.ID {
		t.Fatalf("first delivery %q, want a0", d.Message().Body)
	}
	d.Nack(context.Background(), bus.NackOptions{Delay: time.Second})
	if d = receive(t, sub, 500*time.Millisecond); d.Message().ID != b0.ID {
		t.Fatalf("while a0 waits got %q, want b0 of the other key", d.Message().Body)
	}
	d.Ack(context.Background())
	if d = receive(t, sub, 5*time.Second); d.Message().ID != a0.ID || d.Message().Attempt != 2 {
		t.Fatalf("got %q attempt %d, want a0 again before a1", d.Message().Body, d.Message().Attempt)
	}
	d.Ack(context.Background())
	if d = receive(t, sub, 5*time.Second); d.Message().ID != a1.ID {
		t.Fatalf("got %q, want a1", d.Message().Body)
	}
	d.Ack(context.Background())
}
