package redisstream_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

func topicName(t *testing.T) string { return brokertest.Name(t) }

func subscribe(t *testing.T, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	return brokertest.Subscribe(t, b, topic, opts)
}

func publish(t *testing.T, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	brokertest.Publish(t, p, topic, msgs...)
}

func receive(t testing.TB, sub bus.Subscription) bus.Delivery {
	t.Helper()
	return brokertest.Receive(t, sub, 20*time.Second)
}

func ack(t testing.TB, d bus.Delivery) {
	t.Helper()
	brokertest.Ack(t, d)
}

func nack(t testing.TB, d bus.Delivery, opts bus.NackOptions) {
	t.Helper()
	if err := d.Nack(context.Background(), opts); err != nil {
		t.Fatalf("Nack: %v", err)
	}
}

func expectNothing(t *testing.T, sub bus.Subscription, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if d, err := sub.Receive(ctx); err == nil {
		t.Fatalf("unexpected delivery %q attempt %d", d.Message().Body, d.Message().Attempt)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: %v", err)
	}
}

// ghostRead takes one new entry of stream into the pending list of a
// consumer that never settles it, as a consumer that dies would.
func ghostRead(t *testing.T, rdb redis.UniversalClient, stream, group string) string {
	t.Helper()
	res, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: group, Consumer: "ghost", Streams: []string{stream, ">"}, Count: 1, Block: 5 * time.Second,
	}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
		t.Fatalf("ghost XREADGROUP on %s: %v %v", stream, res, err)
	}
	return res[0].Messages[0].ID
}

// retryStream is the layout documented in the package comment, of a
// standalone server or (o.Cluster) of a cluster.
func retryStream(o redisstream.Options, topic, group string) string {
	rest := strconv.Itoa(len(topic)) + ":" + topic + ":" + group
	if o.Cluster {
		return "omnibus:retry:{" + redisconn.HashTag(topic) + "}:" + rest
	}
	return "omnibus:retry:" + rest
}

// fastClaims returns options under which deliveries are claimed soon
// after their consumer stops renewing them.
func fastClaims(t *testing.T) redisstream.Options {
	o := options(t)
	o.VisibilityTimeout = 300 * time.Millisecond
	o.ClaimInterval = 50 * time.Millisecond
	return o
}

// TestAttemptsAcrossClaimsAndRetries follows one message through claims
// (after a consumer died holding it) and a retry: its Attempt counts every
// delivery.
func TestAttemptsAcrossClaimsAndRetries(t *testing.T) {
	b := newBroker(t, fastClaims(t))
	rdb := b.Client()
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g", MaxAttempts: 10})
	m := bus.NewMessage([]byte("counted"))
	m.Headers["h"] = "v"

	// Stop the subscription from taking it first: pause it by holding its
	// window full with another message.
	blocker := bus.NewMessage([]byte("blocker"))
	publish(t, b, topic, blocker)
	hold := receive(t, sub)
	publish(t, b, topic, m)
	ghostRead(t, rdb, topic, "g") // delivery 1, to a consumer that dies
	ack(t, hold)

	d := receive(t, sub) // claimed after the visibility timeout
	if d.Message().ID != m.ID || d.Message().Attempt != 2 || d.Message().Headers.Get("h") != "v" {
		t.Fatalf("got %q attempt %d, want %q attempt 2", d.Message().Body, d.Message().Attempt, m.Body)
	}
	// A retry goes to the group's retry stream, where a dying consumer
	// takes it once more.
	sub.Close()
	nackErr := d.Nack(context.Background(), bus.NackOptions{})
	if !errors.Is(nackErr, bus.ErrClosed) {
		t.Fatalf("Nack after Close: %v, want ErrClosed", nackErr)
	}
	sub = subscribe(t, b, topic, bus.SubscribeOptions{Group: "g", MaxAttempts: 10})
	d = receive(t, sub) // given back by Close: delivery 3
	if d.Message().ID != m.ID || d.Message().Attempt != 3 {
		t.Fatalf("after Close got %q attempt %d, want attempt 3", d.Message().Body, d.Message().Attempt)
	}
	// The retry entry carries 3 attempts. While it waits for its delay,
	// the window fills with another message, so that a dying consumer
	// takes the retry once it is due.
	nack(t, d, bus.NackOptions{Delay: 300 * time.Millisecond})
	hold2 := bus.NewMessage([]byte("blocker 2"))
	publish(t, b, topic, hold2)
	if hold = receive(t, sub); hold.Message().ID != hold2.ID {
		t.Fatalf("got %q, want the second blocker while the retry waits", hold.Message().Body)
	}
	ghostRead(t, rdb, retryStream(fastClaims(t), topic, "g"), "g") // delivery 4, dies
	ack(t, hold)
	d = receive(t, sub) // claimed: delivery 5
	if d.Message().ID != m.ID || d.Message().Attempt != 5 || d.Message().Headers.Get("h") != "v" {
		t.Fatalf("got %q attempt %d, want %q attempt 5", d.Message().Body, d.Message().Attempt, m.Body)
	}
	ack(t, d)
	expectNothing(t, sub, 500*time.Millisecond)
}

// TestDeadLetterByDeliveryCount: a message whose deliveries all end
// without a settlement (its consumers die) is dead-lettered once it has
// been delivered MaxAttempts times.
func TestDeadLetterByDeliveryCount(t *testing.T) {
	b := newBroker(t, fastClaims(t))
	topic := topicName(t)
	opts := bus.SubscribeOptions{Group: "g", MaxAttempts: 2}
	dlq := subscribe(t, b, topic+".dlq", bus.SubscribeOptions{})
	first := subscribe(t, b, topic, opts)
	m := bus.NewMessage([]byte("kills its consumers"))
	m.Key = "k"
	publish(t, b, topic, m)
	ghostFree := receive(t, first) // delivery 1
	if ghostFree.Message().Attempt != 1 {
		t.Fatalf("Attempt = %d, want 1", ghostFree.Message().Attempt)
	}
	first.Close() // gives it back unsettled
	second := subscribe(t, b, topic, opts)
	d := receive(t, second) // delivery 2, the last
	if d.Message().ID != m.ID || d.Message().Attempt != 2 {
		t.Fatalf("got %q attempt %d, want attempt 2", d.Message().Body, d.Message().Attempt)
	}
	second.Close()
	third := subscribe(t, b, topic, opts)

	dead := receive(t, dlq)
	got := dead.Message()
	if got.ID != m.ID || got.Key != "k" || got.Headers.Get(bus.HeaderAttempts) != "2" ||
		got.Headers.Get(bus.HeaderOriginGroup) != "g" || got.Headers.Get(bus.HeaderOriginTopic) != topic {
		t.Fatalf("dead letter %q key %q headers %v, want the message with 2 attempts from %s/g", got.Body, got.Key, got.Headers, topic)
	}
	ack(t, dead)
	expectNothing(t, third, 500*time.Millisecond)
}

// TestRetriesStayInGroup: a retry of one group is invisible to another
// group of the topic.
func TestRetriesStayInGroup(t *testing.T) {
	b := newBroker(t, options(t))
	topic := topicName(t)
	failing := subscribe(t, b, topic, bus.SubscribeOptions{Group: "failing"})
	healthy := subscribe(t, b, topic, bus.SubscribeOptions{Group: "healthy"})
	m := bus.NewMessage([]byte("once per group"))
	publish(t, b, topic, m)

	d := receive(t, failing)
	nack(t, d, bus.NackOptions{})
	d = receive(t, failing)
	nack(t, d, bus.NackOptions{Delay: 100 * time.Millisecond})
	d = receive(t, failing)
	if d.Message().ID != m.ID || d.Message().Attempt != 3 {
		t.Fatalf("failing group got %q attempt %d, want attempt 3", d.Message().Body, d.Message().Attempt)
	}
	ack(t, d)

	d = receive(t, healthy)
	if d.Message().ID != m.ID || d.Message().Attempt != 1 {
		t.Fatalf("healthy group got %q attempt %d, want attempt 1", d.Message().Body, d.Message().Attempt)
	}
	ack(t, d)
	expectNothing(t, healthy, 300*time.Millisecond)
	expectNothing(t, failing, 100*time.Millisecond)

	// Acked retries leave the group's retry stream.
	n, err := b.Client().XLen(context.Background(), retryStream(options(t), topic, "failing")).Result()
	if err != nil || n != 0 {
		t.Fatalf("retry stream holds %d entries (%v), want 0", n, err)
	}
}

// TestLongHandlerKeepsDelivery: a live subscription renews what it holds,
// so a handler slower than the visibility timeout is not mistaken for a
// dead consumer.
func TestLongHandlerKeepsDelivery(t *testing.T) {
	b := newBroker(t, fastClaims(t))
	topic := topicName(t)
	slow := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
	other := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
	publish(t, b, topic, bus.NewMessage([]byte("slow work")))
	var d bus.Delivery
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan bus.Delivery, 2)
	for _, s := range []bus.Subscription{slow, other} {
		go func(s bus.Subscription) {
			if d, err := s.Receive(ctx); err == nil {
				got <- d
			}
		}(s)
	}
	d = <-got
	// Four visibility timeouts pass while the handler works.
	select {
	case dup := <-got:
		t.Fatalf("delivered twice while in progress: attempt %d", dup.Message().Attempt)
	case <-time.After(1200 * time.Millisecond):
	}
	ack(t, d)
	select {
	case dup := <-got:
		t.Fatalf("delivered again after Ack: attempt %d", dup.Message().Attempt)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestCloseGivesBackUnseenAsUnseen: Close gives back every delivery a
// subscription holds; those fetched ahead but never handed out keep their
// attempt number.
func TestCloseGivesBackUnseenAsUnseen(t *testing.T) {
	b := newBroker(t, options(t))
	topic := topicName(t)
	opts := bus.SubscribeOptions{Group: "g", Prefetch: 5}
	first := subscribe(t, b, topic, opts)
	msgs := []*bus.Message{bus.NewMessage([]byte("0")), bus.NewMessage([]byte("1")), bus.NewMessage([]byte("2"))}
	publish(t, b, topic, msgs...)
	seen := receive(t, first)
	// Let the subscription fetch the rest ahead.
	time.Sleep(200 * time.Millisecond)
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := seen.Ack(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Ack after Close: %v, want ErrClosed", err)
	}
	second := subscribe(t, b, topic, opts)
	attempts := map[string]int{}
	for range msgs {
		d := receive(t, second)
		attempts[string(d.Message().Body)] = d.Message().Attempt
		ack(t, d)
	}
	want := map[string]int{string(seen.Message().Body): 2}
	for _, m := range msgs {
		if _, ok := want[string(m.Body)]; !ok {
			want[string(m.Body)] = 1
		}
	}
	for k, v := range want {
		if attempts[k] != v {
			t.Errorf("message %s: attempt %d, want %d (all: %v)", k, attempts[k], v, attempts)
		}
	}
	// The closed consumer left the group.
	consumers, err := b.Client().XInfoConsumers(context.Background(), topic, "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range consumers {
		if c.Pending > 0 {
			t.Errorf("consumer %s still holds %d entries", c.Name, c.Pending)
		}
	}
}

// TestTrim removes what every group acknowledged, and nothing else.
func TestTrim(t *testing.T) {
	b := newBroker(t, options(t))
	ctx := context.Background()
	topic := topicName(t)
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("before any group"))); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Trim(ctx, topic); err != nil || n != 0 {
		t.Fatalf("Trim without groups removed %d (%v), want 0", n, err)
	}
	fast := subscribe(t, b, topic, bus.SubscribeOptions{Group: "fast", Prefetch: 20})
	slow := subscribe(t, b, topic, bus.SubscribeOptions{Group: "slow", Prefetch: 20})
	var msgs []*bus.Message
	for i := range 9 {
		msgs = append(msgs, bus.NewMessage([]byte(strconv.Itoa(i+1))))
	}
	publish(t, b, topic, msgs...)
	for range 10 {
		ack(t, receive(t, fast))
	}
	// slow acks the first 4 of 10 and holds the 5th.
	for range 4 {
		ack(t, receive(t, slow))
	}
	held := receive(t, slow)
	n, err := b.Trim(ctx, topic)
	if err != nil || n != 4 {
		t.Fatalf("Trim removed %d (%v), want the 4 entries both groups acked", n, err)
	}
	ack(t, held)
	for range 5 {
		ack(t, receive(t, slow))
	}
	if n, err = b.Trim(ctx, topic); err != nil || n != 5 {
		t.Fatalf("second Trim removed %d (%v), want 5 (the last entry stays as the groups' position)", n, err)
	}
	if l := b.Client().XLen(ctx, topic).Val(); l != 1 {
		t.Fatalf("stream has %d entries, want 1", l)
	}
	// A new message still reaches both groups.
	publish(t, b, topic, bus.NewMessage([]byte("after trim")))
	ack(t, receive(t, fast))
	ack(t, receive(t, slow))
}

// TestEntryLayout pins the documented field layout, which other programs
// may read, and reads entries that other programs wrote.
func TestEntryLayout(t *testing.T) {
	b := newBroker(t, options(t))
	ctx := context.Background()
	topic := topicName(t)
	m := &bus.Message{ID: "id-1", Key: "key-1", Body: []byte("body"), Headers: bus.Headers{"i": "header named i"},
		PublishedAt: time.Unix(1700000000, 123456789)}
	publish(t, b, topic, m)
	entries, err := b.Client().XRange(ctx, topic, "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("XRANGE: %v %v", entries, err)
	}
	want := map[string]any{"i": "id-1", "k": "key-1", "b": "body", "t": "1700000000123456789", "h:i": "header named i"}
	if got := entries[0].Values; len(got) != len(want) {
		t.Fatalf("entry fields %v, want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("field %q = %v, want %v", k, got[k], v)
			}
		}
	}

	sub := subscribe(t, b, topic, bus.SubscribeOptions{})
	d := receive(t, sub)
	if got := d.Message(); got.ID != "id-1" || got.Headers.Get("i") != "header named i" || !got.PublishedAt.Equal(m.PublishedAt) {
		t.Fatalf("got %+v", got)
	}
	ack(t, d)

	id, err := b.Client().XAdd(ctx, &redis.XAddArgs{Stream: topic, Values: []string{"event", "signup", "b", "foreign"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	d = receive(t, sub)
	if got := d.Message(); got.ID != id || string(got.Body) != "foreign" || got.Headers.Get("event") != "signup" {
		t.Fatalf("foreign entry read as %+v, want ID %s, body and header event", got, id)
	}
	ack(t, d)
}

// TestPostponeIsNoAttempt: postponing keeps the attempt number through
// the delayed set and the retry stream, and a later failure counts from
// there.
func TestPostponeIsNoAttempt(t *testing.T) {
	b := newBroker(t, options(t))
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 2})
	dlq := subscribe(t, b, topic+".dlq", bus.SubscribeOptions{})
	m := bus.NewMessage([]byte("countdown"))
	publish(t, b, topic, m)
	for range 3 {
		d := receive(t, sub)
		if d.Message().Attempt != 1 {
			t.Fatalf("Attempt = %d after postponing, want 1", d.Message().Attempt)
		}
		nack(t, d, bus.NackOptions{Postpone: true, Delay: 20 * time.Millisecond})
	}
	d := receive(t, sub)
	nack(t, d, bus.NackOptions{Reason: errors.New("first failure")})
	d = receive(t, sub)
	if d.Message().Attempt != 2 {
		t.Fatalf("Attempt = %d after one failure, want 2", d.Message().Attempt)
	}
	nack(t, d, bus.NackOptions{Reason: errors.New("second failure")})
	dead := receive(t, dlq)
	if dead.Message().ID != m.ID || dead.Message().Headers.Get(bus.HeaderAttempts) != "2" {
		t.Fatalf("dead letter %q with %s=%q, want %q after 2 attempts", dead.Message().Body,
			bus.HeaderAttempts, dead.Message().Headers.Get(bus.HeaderAttempts), m.Body)
	}
	ack(t, dead)
}

// TestDeadConsumersLeaveGroup: once their entries are claimed, the
// consumers of dead processes are deleted from the group.
func TestDeadConsumersLeaveGroup(t *testing.T) {
	b := newBroker(t, fastClaims(t))
	ctx := context.Background()
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
	hold := bus.NewMessage([]byte("keeps the window full"))
	publish(t, b, topic, hold)
	held := receive(t, sub)
	publish(t, b, topic, bus.NewMessage([]byte("taken by a consumer that dies")))
	ghostRead(t, b.Client(), topic, "g")
	ack(t, held)
	d := receive(t, sub)
	if d.Message().Attempt != 2 {
		t.Fatalf("Attempt = %d, want 2 after the claim", d.Message().Attempt)
	}
	ack(t, d)
	deadline := time.Now().Add(10 * time.Second)
	for {
		consumers, err := b.Client().XInfoConsumers(ctx, topic, "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		ghost := false
		for _, c := range consumers {
			ghost = ghost || c.Name == "ghost"
		}
		if !ghost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer ghost is still in the group: %+v", consumers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFetchesWhenBufferRunsDry: a subscription that waits for room to
// fetch a larger batch still fetches as soon as Receive has nothing left
// to hand out.
func TestFetchesWhenBufferRunsDry(t *testing.T) {
	b := newBroker(t, options(t))
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 4})
	publish(t, b, topic, bus.NewMessage([]byte("0")), bus.NewMessage([]byte("1")), bus.NewMessage([]byte("2")), bus.NewMessage([]byte("3")))
	ack(t, receive(t, sub))
	time.Sleep(100 * time.Millisecond) // room for one: too little to fetch while three wait
	publish(t, b, topic, bus.NewMessage([]byte("4")))
	var held []bus.Delivery
	for range 3 {
		held = append(held, receive(t, sub))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive with one free slot and a message waiting: %v", err)
	}
	if string(d.Message().Body) != "4" {
		t.Fatalf("got %q, want 4", d.Message().Body)
	}
	for _, h := range append(held, d) {
		ack(t, h)
	}
}

// TestScriptCacheFlushed: the subscription keeps fetching after Redis
// forgets its scripts, as after a restart or a failover.
func TestScriptCacheFlushed(t *testing.T) {
	b := newBroker(t, options(t))
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 64})
	publish(t, b, topic, bus.NewMessage([]byte("before")))
	ack(t, receive(t, sub))
	if err := b.Client().ScriptFlush(context.Background()).Err(); err != nil {
		if brokertest.InCI() {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		t.Skipf("SCRIPT FLUSH: %v", err)
	}
	var msgs []*bus.Message
	for i := range 40 {
		msgs = append(msgs, bus.NewMessage([]byte(strconv.Itoa(i))))
	}
	publish(t, b, topic, msgs...)
	for range msgs {
		ack(t, receive(t, sub))
	}
}

// TestTrimInterval: subscriptions trim their topic periodically when asked.
func TestTrimInterval(t *testing.T) {
	o := options(t)
	o.TrimInterval = 50 * time.Millisecond
	b := newBroker(t, o)
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 10})
	var msgs []*bus.Message
	for i := range 5 {
		msgs = append(msgs, bus.NewMessage([]byte(strconv.Itoa(i))))
	}
	publish(t, b, topic, msgs...)
	for range msgs {
		ack(t, receive(t, sub))
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Client().XLen(context.Background(), topic).Val() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stream still holds %d entries", b.Client().XLen(context.Background(), topic).Val())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
