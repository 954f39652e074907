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
)

func topicName(t *testing.T) string {
	return "omnibus-test." + t.Name() + "." + bus.NewID()
}

func subscribe(t *testing.T, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), topic, opts)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func publish(t *testing.T, p bus.Publisher, topic string, msgs ...*bus.Message) {
	t.Helper()
	if err := p.Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func receive(t testing.TB, sub bus.Subscription) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func ack(t testing.TB, d bus.Delivery) {
	t.Helper()
	if err := d.Ack(context.Background()); err != nil {
		t.Fatalf("Ack: %v", err)
	}
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
func ghostRead(t *testing.T, rdb *redis.Client, stream, group string) string {
	t.Helper()
	res, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: group, Consumer: "ghost", Streams: []string{stream, ">"}, Count: 1, Block: 5 * time.Second,
	}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
		t.Fatalf("ghost XREADGROUP on %s: %v %v", stream, res, err)
	}
	return res[0].Messages[0].ID
}

// retryStream is the layout documented in the package comment.
func retryStream(topic, group string) string {
	return "omnibus:retry:" + strconv.Itoa(len(topic)) + ":" + topic + ":" + group
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
	ghostRead(t, rdb, retryStream(topic, "g"), "g") // delivery 4, dies
	ack(t, hold)
	d = receive(t, sub) // claimed: delivery 5
	if d.Message().ID != m.ID || d.Message().Attempt != 5 || d.Message().Headers.Get("h") != "v" {
		t.Fatalf("got %q attempt %d, want %q attempt 5", d.Message().Body, d.Message().Attempt, m.Body)
	}
	ack(t, d)
	expectNothing(t, sub, 500*time.Millisecond)
}
