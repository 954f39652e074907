package watermill_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibus-mq/omnibus/internal/leak"

	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
)

func newFakeBroker(t *testing.T, opts wmbridge.Options) (*wmbridge.Broker, *fakePub, *fakeSub) {
	t.Helper()
	pub, sub := newFakePub(), newFakeSub()
	b, err := wmbridge.NewBroker(pub, sub, opts)
	if err != nil {
		t.Fatalf("NewBroker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, pub, sub
}

func subscribe(t *testing.T, b bus.Subscriber, topic string, opts bus.SubscribeOptions) bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(context.Background(), topic, opts)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func receive(t *testing.T, s bus.Subscription) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := s.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func TestBrokerOverGoChannel(t *testing.T) {
	defer leak.Check(t)()
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	b, err := wmbridge.NewBroker(ps, ps, wmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, "orders", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent := &bus.Message{
		Key:     "customer-7",
		Body:    []byte("order 1"),
		Headers: bus.Headers{"content-type": "text/plain", bus.HeaderCorrelationID: "req-9"},
	}
	if err := b.Publish(ctx, "orders", sent); err != nil {
		t.Fatal(err)
	}
	if sent.ID == "" || sent.PublishedAt.IsZero() {
		t.Fatalf("Publish left ID %q, PublishedAt %v unset", sent.ID, sent.PublishedAt)
	}
	// The bus contract gives the body back to the caller once Publish
	// returns; gochannel keeps the payload, so the bridge must have copied.
	sent.Body[0] = 'X'

	d := receive(t, sub)
	got := d.Message()
	if got.ID != sent.ID || got.Key != sent.Key || string(got.Body) != "order 1" || got.Attempt != 1 {
		t.Fatalf("got id=%q key=%q body=%q attempt=%d, want id=%q key=%q body=%q attempt 1",
			got.ID, got.Key, got.Body, got.Attempt, sent.ID, sent.Key, "order 1")
	}
	if !got.PublishedAt.Equal(sent.PublishedAt) {
		t.Errorf("PublishedAt = %v, want %v to the nanosecond", got.PublishedAt, sent.PublishedAt)
	}
	if len(got.Headers) != 2 || got.Headers["content-type"] != "text/plain" || got.Headers[bus.HeaderCorrelationID] != "req-9" {
		t.Errorf("headers = %v, want the two sent (reserved metadata mapped to fields)", got.Headers)
	}

	// gochannel redelivers a nacked message to the same subscription.
	if err := d.Nack(ctx, bus.NackOptions{}); err != nil {
		t.Fatal(err)
	}
	d = receive(t, sub)
	if d.Message().ID != sent.ID || d.Message().Attempt != 2 {
		t.Fatalf("redelivery id=%q attempt=%d, want id=%q attempt 2", d.Message().ID, d.Message().Attempt, sent.ID)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("second Ack: %v, want ErrAlreadyAcked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish(ctx, "orders", bus.NewMessage(nil)); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, "orders", bus.SubscribeOptions{}); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func TestBrokerDeadLettersAfterMaxAttempts(t *testing.T) {
	b, pub, sub := newFakeBroker(t, wmbridge.Options{})
	s := subscribe(t, b, "sms", bus.SubscribeOptions{Group: bus.DefaultGroup, MaxAttempts: 3})
	ctx := context.Background()

	var last *message.Message
	for attempt := 1; attempt <= 3; attempt++ {
		// Watermill pub/subs redeliver a nacked message as a new
		// *message.Message with the same UUID.
		wm := message.NewMessage("msg-1", []byte("code 1234"))
		wm.Metadata["tenant"] = "acme"
		wm.Metadata[wmbridge.MetadataKey] = "+15550100"
		sub.feed(t, "sms", wm)
		d := receive(t, s)
		if d.Message().Attempt != attempt {
			t.Fatalf("delivery %d has Attempt %d", attempt, d.Message().Attempt)
		}
		if err := d.Nack(ctx, bus.NackOptions{Reason: errors.New("gateway 503 #" + strconv.Itoa(attempt))}); err != nil {
			t.Fatal(err)
		}
		want := "nack"
		if attempt == 3 {
			want = "ack" // the dead-letter copy holds it now
		}
		if got := settlement(t, wm, time.Second); got != want {
			t.Fatalf("attempt %d: watermill message got %s, want %s", attempt, got, want)
		}
		last = wm
	}
	dead := pub.messages("sms.dlq")
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	dl := dead[0]
	if dl.UUID != last.UUID || !bytes.Equal(dl.Payload, last.Payload) {
		t.Fatalf("dead letter %s %q, want %s %q", dl.UUID, dl.Payload, last.UUID, last.Payload)
	}
	for k, v := range map[string]string{
		bus.HeaderError:          "gateway 503 #3",
		bus.HeaderAttempts:       "3",
		bus.HeaderOriginTopic:    "sms",
		bus.HeaderOriginGroup:    bus.DefaultGroup,
		"tenant":                 "acme",
		wmbridge.MetadataKey:     "+15550100",
		wmbridge.MetadataAttempt: "",
	} {
		if dl.Metadata[k] != v {
			t.Errorf("dead letter metadata %q = %q, want %q", k, dl.Metadata[k], v)
		}
	}

	// After dead-lettering the count starts again: a later message with
	// the same UUID is a new message.
	wm := message.NewMessage("msg-1", []byte("again"))
	sub.feed(t, "sms", wm)
	if d := receive(t, s); d.Message().Attempt != 1 {
		t.Fatalf("Attempt = %d after dead-lettering, want 1", d.Message().Attempt)
	}
}

func TestBrokerDeadLetterAtOnceAndPublishFailure(t *testing.T) {
	b, pub, sub := newFakeBroker(t, wmbridge.Options{})
	s := subscribe(t, b, "jobs", bus.SubscribeOptions{DeadLetterTopic: "jobs.poison", Prefetch: 1})
	ctx := context.Background()

	pub.fail("jobs.poison", errInjected)
	wm := message.NewMessage("m", []byte("x"))
	sub.feed(t, "jobs", wm)
	d := receive(t, s)
	err := d.Nack(ctx, bus.NackOptions{DeadLetter: true, Reason: errors.New("undecodable")})
	if !errors.Is(err, errInjected) {
		t.Fatalf("Nack with a failing dead-letter publish: %v, want the publish error", err)
	}
	// Nothing is lost: the original goes back for redelivery, counted.
	if got := settlement(t, wm, time.Second); got != "nack" {
		t.Fatalf("original got %s, want nack", got)
	}
	if err := d.Ack(ctx); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("Ack after Nack: %v, want ErrAlreadyAcked", err)
	}

	pub.fail("jobs.poison", nil)
	wm = message.NewMessage("m", []byte("x"))
	sub.feed(t, "jobs", wm)
	d = receive(t, s)
	if d.Message().Attempt != 2 {
		t.Fatalf("Attempt = %d, want 2", d.Message().Attempt)
	}
	if err := d.Nack(ctx, bus.NackOptions{DeadLetter: true, Reason: errors.New("undecodable")}); err != nil {
		t.Fatal(err)
	}
	if got := settlement(t, wm, time.Second); got != "ack" {
		t.Fatalf("original got %s, want ack", got)
	}
	if dead := pub.messages("jobs.poison"); len(dead) != 1 || dead[0].Metadata[bus.HeaderAttempts] != "2" {
		t.Fatalf("dead letters %v, want one with 2 attempts", dead)
	}
}

func TestBrokerPrefetchAndClose(t *testing.T) {
	defer leak.Check(t)()
	pub, sub := newFakePub(), newFakeSub()
	b, err := wmbridge.NewBroker(pub, sub, wmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Subscribe(context.Background(), "t", bus.SubscribeOptions{Prefetch: 2})
	if err != nil {
		t.Fatal(err)
	}
	m1, m2, m3 := message.NewMessage("1", nil), message.NewMessage("2", nil), message.NewMessage("3", nil)
	sub.feed(t, "t", m1)
	sub.feed(t, "t", m2)
	d1, d2 := receive(t, s), receive(t, s)

	// The window is full: Receive waits without taking a third message.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if _, err := s.Receive(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive with a full window: %v, want DeadlineExceeded", err)
	}
	cancel()
	if err := d1.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	sub.feed(t, "t", m3)
	d3 := receive(t, s)
	if d3.Message().ID != "3" {
		t.Fatalf("got %s, want 3", d3.Message().ID)
	}

	// Close gives the unsettled messages back and ends the watermill
	// subscription.
	blocked := make(chan error, 1)
	go func() {
		// Let the window drain by acking d3 first, so Receive blocks on
		// the channel rather than on the window.
		_ = d3.Ack(context.Background())
		_, err := s.Receive(context.Background())
		blocked <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("blocked Receive after Close: %v, want ErrClosed", err)
	}
	if got := settlement(t, m2, time.Second); got != "nack" {
		t.Fatalf("unsettled message got %s on Close, want nack", got)
	}
	if err := d2.Ack(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Ack after Close: %v, want ErrClosed", err)
	}
	sub.mu.Lock()
	subCtx := sub.ctxs["t"]
	sub.mu.Unlock()
	select {
	case <-subCtx.Done():
	case <-time.After(time.Second):
		t.Fatal("the watermill subscription's context was not cancelled")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if sub.closed() != 1 || pub.closes != 1 {
		t.Fatalf("Close closed subscriber %d, publisher %d times, want once each", sub.closed(), pub.closes)
	}
}

func TestBrokerChannelClosedByWatermill(t *testing.T) {
	defer leak.Check(t)()
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	b, err := wmbridge.NewBroker(ps, ps, wmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Subscribe(context.Background(), "t", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Closing the watermill pub/sub under the bridge closes its channel.
	ps.Close()
	if _, err := s.Receive(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Receive after the watermill channel closed: %v, want ErrClosed", err)
	}
}

func TestBrokerDelayNacks(t *testing.T) {
	b, _, sub := newFakeBroker(t, wmbridge.Options{DelayNacks: true})
	if !b.Features().NackDelay {
		t.Fatal("Features().NackDelay is false with DelayNacks set")
	}
	s := subscribe(t, b, "t", bus.SubscribeOptions{Prefetch: 1})
	ctx := context.Background()

	m1 := message.NewMessage("1", nil)
	sub.feed(t, "t", m1)
	d := receive(t, s)
	start := time.Now()
	if err := d.Nack(ctx, bus.NackOptions{Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	// The delayed message frees its prefetch slot at once.
	m2 := message.NewMessage("2", nil)
	sub.feed(t, "t", m2)
	d2 := receive(t, s)
	if got := settlement(t, m1, 5*time.Second); got != "nack" {
		t.Fatalf("delayed message got %s, want nack", got)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("nacked after %v, want about 300ms", waited)
	}

	// Close does not wait out a delay: the message goes back at once.
	if err := d2.Nack(ctx, bus.NackOptions{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	unsettled(t, m2, 50*time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := settlement(t, m2, time.Second); got != "nack" {
		t.Fatalf("delayed message got %s on Close, want nack", got)
	}
}

func TestBrokerWithoutDelayNacksNacksAtOnce(t *testing.T) {
	b, _, sub := newFakeBroker(t, wmbridge.Options{Features: bus.Features{NackDelay: true, OrderedPerKey: true}})
	if f := b.Features(); f.NackDelay || !f.OrderedPerKey {
		t.Fatalf("Features() = %+v, want the caller's with NackDelay false", f)
	}
	s := subscribe(t, b, "t", bus.SubscribeOptions{})
	m := message.NewMessage("1", nil)
	sub.feed(t, "t", m)
	if err := receive(t, s).Nack(context.Background(), bus.NackOptions{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := settlement(t, m, time.Second); got != "nack" {
		t.Fatalf("got %s, want an immediate nack", got)
	}
}

func TestBrokerGroups(t *testing.T) {
	pub, fixed := newFakePub(), newFakeSub()
	ctx := context.Background()

	// A fixed subscriber serves its own group only.
	b, err := wmbridge.NewBroker(pub, fixed, wmbridge.Options{Group: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, b, "t", bus.SubscribeOptions{Group: "billing"})
	if _, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{}); !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("Subscribe to another group: %v, want ErrBadConfig", err)
	}
	b.Close()

	// A constructor builds one subscriber per group, and Close closes
	// each once.
	built := map[string]*fakeSub{}
	b, err = wmbridge.NewBroker(newFakePub(), nil, wmbridge.Options{
		NewSubscriber: func(group string) (message.Subscriber, error) {
			if group == "broken" {
				return nil, errInjected
			}
			if built[group] != nil {
				t.Errorf("subscriber of group %q built twice", group)
			}
			built[group] = newFakeSub()
			return built[group], nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"a", "b", "a", ""} {
		subscribe(t, b, "t", bus.SubscribeOptions{Group: g})
	}
	if _, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{Group: "broken"}); !errors.Is(err, errInjected) {
		t.Fatalf("Subscribe with a failing constructor: %v, want its error", err)
	}
	if len(built) != 3 || built[bus.DefaultGroup] == nil {
		t.Fatalf("built subscribers for %v, want a, b and %s", built, bus.DefaultGroup)
	}
	b.Close()
	for g, s := range built {
		if s.closed() != 1 {
			t.Errorf("subscriber of %q closed %d times, want 1", g, s.closed())
		}
	}
}

func TestBrokerClosesSharedPubSubOnce(t *testing.T) {
	both := &sharedPubSub{pub: newFakePub()}
	b, err := wmbridge.NewBroker(both, both, wmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if both.closes != 1 {
		t.Fatalf("a pub/sub given as publisher and subscriber closed %d times, want 1", both.closes)
	}
}

// sharedPubSub is one value serving as publisher and subscriber, as
// gochannel does.
type sharedPubSub struct {
	pub    *fakePub
	closes int
}

func (s *sharedPubSub) Publish(topic string, msgs ...*message.Message) error {
	return s.pub.Publish(topic, msgs...)
}

func (s *sharedPubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return nil, errors.New("not used")
}

func (s *sharedPubSub) Close() error { s.closes++; return nil }

func TestBrokerPublish(t *testing.T) {
	b, pub, _ := newFakeBroker(t, wmbridge.Options{Features: bus.Features{MaxMessageSize: 100}})
	ctx := context.Background()

	err := b.Publish(ctx, "t", bus.NewMessage([]byte("ok")), bus.NewMessage(make([]byte, 200)))
	var se *bus.SizeError
	if !errors.As(err, &se) || se.Index != 1 {
		t.Fatalf("oversize batch: %v, want a *bus.SizeError for message 1", err)
	}
	if n := len(pub.messages("t")); n != 0 {
		t.Fatalf("%d messages of a refused batch were published", n)
	}

	pub.fail("t", errInjected)
	err = b.Publish(ctx, "t", bus.NewMessage(nil), bus.NewMessage(nil))
	var pe *bus.PublishError
	if !errors.As(err, &pe) || len(pe.Unconfirmed) != 2 || !errors.Is(err, errInjected) {
		t.Fatalf("failed publish: %v, want a *bus.PublishError naming both messages and wrapping the cause", err)
	}
	pub.fail("t", nil)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Publish(cctx, "t", bus.NewMessage(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context: %v", err)
	}

	// The message's context is the Publish context, for watermill
	// publishers that honour it; a caller's attempt header is refused
	// (driver.CheckHeader), and Message.Attempt is not sent.
	type key struct{}
	vctx := context.WithValue(ctx, key{}, "v")
	m := bus.NewMessage([]byte("x"))
	m.Headers[wmbridge.MetadataAttempt] = "7"
	if err := b.Publish(vctx, "t", m); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Publish with an attempt header: %v, want ErrInvalidMessage", err)
	}
	delete(m.Headers, wmbridge.MetadataAttempt)
	m.Attempt = 3
	if err := b.Publish(vctx, "t", m); err != nil {
		t.Fatal(err)
	}
	got := pub.messages("t")
	if len(got) != 1 || got[0].Context().Value(key{}) != "v" {
		t.Fatalf("published %d messages; the context did not carry the Publish context", len(got))
	}
	if _, ok := got[0].Metadata[wmbridge.MetadataAttempt]; ok {
		t.Fatalf("published metadata %v carries an attempt", got[0].Metadata)
	}
	if err := b.Publish(ctx, "t"); err != nil {
		t.Fatalf("empty Publish: %v", err)
	}
}

func TestNewBrokerValidates(t *testing.T) {
	_, err := wmbridge.NewBroker(nil, nil, wmbridge.Options{Features: bus.Features{MaxMessageSize: -1}})
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("NewBroker(nil, nil): %v, want a *bus.ConfigError", err)
	}
	if len(ce.Problems) != 3 {
		t.Fatalf("problems %v, want all three reported", ce.Problems)
	}
}

func TestAttemptLogForgetsOldest(t *testing.T) {
	attempts := wmbridge.NewAttemptLog(2)
	pub, sub := newFakePub(), newFakeSub()
	b, err := wmbridge.NewBroker(pub, sub, wmbridge.Options{Attempts: attempts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := subscribe(t, b, "t", bus.SubscribeOptions{MaxAttempts: -1})
	deliver := func(id string) bus.Delivery {
		sub.feed(t, "t", message.NewMessage(id, nil))
		return receive(t, s)
	}
	nackAll := func(ids ...string) {
		for _, id := range ids {
			if err := deliver(id).Nack(context.Background(), bus.NackOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	nackAll("a", "b", "a", "c") // c pushes out the oldest entry, a
	for id, want := range map[string]int{"a": 1, "b": 2, "c": 2} {
		d := deliver(id)
		if d.Message().Attempt != want {
			t.Errorf("%s: Attempt %d, want %d", id, d.Message().Attempt, want)
		}
		d.Ack(context.Background())
	}
	// An empty UUID cannot be tracked.
	nackAll("", "")
	if d := deliver(""); d.Message().Attempt != 1 {
		t.Errorf("message without UUID: Attempt %d, want 1", d.Message().Attempt)
	}
}
