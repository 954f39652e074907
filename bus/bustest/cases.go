package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/leak"
)

func (s *suite) testRoundTrip(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{})

	sent := &bus.Message{
		ID:   bus.NewID(),
		Key:  "user-42",
		Body: []byte(`{"phone":"+15550100"}`),
		Headers: bus.Headers{
			"content-type":          "application/json",
			bus.HeaderTraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			bus.HeaderCorrelationID: "req-1",
			"unicode":               "ключ ✓",
		},
	}
	before := time.Now()
	s.publish(t, b, topic, sent)
	if sent.PublishedAt.IsZero() || sent.PublishedAt.Before(before.Add(-time.Second)) {
		t.Fatalf("Publish set PublishedAt to %v, want about %v", sent.PublishedAt, before)
	}

	d := s.receive(t, sub)
	got := d.Message()
	if got.ID != sent.ID || got.Key != sent.Key || !bytes.Equal(got.Body, sent.Body) {
		t.Fatalf("received id=%q key=%q body=%q, want id=%q key=%q body=%q",
			got.ID, got.Key, got.Body, sent.ID, sent.Key, sent.Body)
	}
	for k, v := range sent.Headers {
		if got.Headers.Get(k) != v {
			t.Errorf("header %q = %q, want %q", k, got.Headers.Get(k), v)
		}
	}
	if diff := got.PublishedAt.Sub(sent.PublishedAt).Abs(); diff > time.Millisecond {
		t.Errorf("PublishedAt = %v, want %v (±1ms)", got.PublishedAt, sent.PublishedAt)
	}
	if got.Attempt != 1 {
		t.Errorf("Attempt = %d on first delivery, want 1", got.Attempt)
	}
	ack(t, d)
	s.expectNothing(t, sub, 300*time.Millisecond)
}

func (s *suite) testBatchPublish(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 50})
	want := messages("batch", 500)
	s.publish(t, b, topic, want...)
	for _, m := range want {
		if m.ID == "" {
			t.Fatal("Publish left a message without an ID")
		}
	}
	s.checkOnce(t, want, s.collect(t, sub, len(want)))
}

func (s *suite) testConcurrentPublishers(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 50})

	const publishers, each = 8, 50
	all := make([][]*bus.Message, publishers)
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	for p := range publishers {
		all[p] = messages("pub"+strconv.Itoa(p), each)
		wg.Add(1)
		go func(msgs []*bus.Message) {
			defer wg.Done()
			for _, m := range msgs {
				if err := b.Publish(s.ctx(t), topic, m); err != nil {
					errs <- err
				}
			}
		}(all[p])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Publish: %v", err)
	}
	var want []*bus.Message
	for _, msgs := range all {
		want = append(want, msgs...)
	}
	s.checkOnce(t, want, s.collect(t, sub, len(want)))
}

func (s *suite) testCompetingConsumers(t *testing.T) {
	topic := s.topic(t)
	opts := bus.SubscribeOptions{Group: "workers", Prefetch: 10}
	const consumers = 3
	subs := make([]bus.Subscription, consumers)
	for i := range subs {
		subs[i] = s.subscribe(t, s.connect(t), topic, opts)
	}
	want := messages("work", 90)
	s.publish(t, s.connect(t), topic, want...)

	// Every consumer drains until the group has delivered everything; no
	// message may reach two consumers.
	var (
		mu       sync.Mutex
		got      []*bus.Message
		distinct = map[string]bool{}
		closed   bool
		wg       sync.WaitGroup
		done     = make(chan struct{})
	)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.timeout())
	defer cancel()
	for _, sub := range subs {
		wg.Add(1)
		go func(sub bus.Subscription) {
			defer wg.Done()
			for {
				d, err := sub.Receive(ctx)
				if err != nil {
					return
				}
				d.Ack(context.Background())
				mu.Lock()
				got = append(got, d.Message())
				distinct[d.Message().ID] = true
				if len(distinct) == len(want) && !closed {
					closed = true
					close(done)
				}
				mu.Unlock()
			}
		}(sub)
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	// Linger briefly so that a duplicate delivery would be seen.
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	s.checkOnce(t, want, got)
}

func (s *suite) testGroupsFanOut(t *testing.T) {
	topic := s.topic(t)
	a := s.subscribe(t, s.connect(t), topic, bus.SubscribeOptions{Group: "billing", Prefetch: 20})
	b := s.subscribe(t, s.connect(t), topic, bus.SubscribeOptions{Group: "audit", Prefetch: 20})
	want := messages("fan", 40)
	s.publish(t, s.connect(t), topic, want...)
	s.checkOnce(t, want, s.collect(t, a, len(want)))
	s.checkOnce(t, want, s.collect(t, b, len(want)))
}

func (s *suite) testNackRedelivers(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 5})
	m := bus.NewMessage([]byte("retry me"))
	m.Headers["k"] = "v"
	s.publish(t, b, topic, m)

	d := s.receive(t, sub)
	nack(t, d, bus.NackOptions{Reason: errors.New("first failure")})
	d = s.receive(t, sub)
	got := d.Message()
	if got.ID != m.ID || string(got.Body) != "retry me" || got.Headers.Get("k") != "v" {
		t.Fatalf("redelivered id=%q body=%q headers=%v, want the nacked message", got.ID, got.Body, got.Headers)
	}
	if got.Attempt != 2 {
		t.Fatalf("Attempt = %d on redelivery, want 2", got.Attempt)
	}
	if !s.cfg.Features.NackDelay {
		ack(t, d)
		return
	}
	const delay = 500 * time.Millisecond
	start := time.Now()
	nack(t, d, bus.NackOptions{Delay: delay})
	d = s.receive(t, sub)
	if waited := time.Since(start); waited < delay/2 {
		t.Fatalf("redelivered after %v, want a delay of about %v", waited, delay)
	}
	if d.Message().Attempt != 3 {
		t.Fatalf("Attempt = %d on second redelivery, want 3", d.Message().Attempt)
	}
	ack(t, d)
	s.expectNothing(t, sub, 300*time.Millisecond)
}

func (s *suite) testNackDelayDoesNotBlock(t *testing.T) {
	if !s.cfg.Features.NackDelay {
		t.Skip("backend does not declare Features.NackDelay")
	}
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 1})
	first, second := bus.NewMessage([]byte("slow")), bus.NewMessage([]byte("fast"))
	s.publish(t, b, topic, first, second)

	d := s.receive(t, sub)
	if d.Message().ID != first.ID {
		t.Fatalf("received %q first, want %q", d.Message().Body, "slow")
	}
	// A long delay on one message must not hold back the next one.
	nack(t, d, bus.NackOptions{Delay: 3 * time.Second})
	d = s.receiveWithin(t, sub, 2*time.Second)
	if d.Message().ID != second.ID {
		t.Fatalf("received %q while the delayed message waits, want %q", d.Message().Body, "fast")
	}
	ack(t, d)
	d = s.receive(t, sub)
	if d.Message().ID != first.ID || d.Message().Attempt != 2 {
		t.Fatalf("received %q attempt %d, want the delayed message on attempt 2", d.Message().Body, d.Message().Attempt)
	}
	ack(t, d)
}

// deadLetters subscribes to the default group of topic's dead-letter topic.
func (s *suite) deadLetters(t *testing.T, b bus.Subscriber, topic string) bus.Subscription {
	return s.subscribe(t, b, bus.DeadLetterTopic(topic), bus.SubscribeOptions{})
}

func checkDeadLetter(t *testing.T, got, sent *bus.Message, topic, group, reason string, attempts int) {
	t.Helper()
	if got.ID != sent.ID || !bytes.Equal(got.Body, sent.Body) || got.Key != sent.Key {
		t.Fatalf("dead letter id=%q key=%q body=%q, want id=%q key=%q body=%q",
			got.ID, got.Key, got.Body, sent.ID, sent.Key, sent.Body)
	}
	h := got.Headers
	if !strings.Contains(h.Get(bus.HeaderError), reason) {
		t.Errorf("header %s = %q, want it to contain %q", bus.HeaderError, h.Get(bus.HeaderError), reason)
	}
	if h.Get(bus.HeaderAttempts) != strconv.Itoa(attempts) {
		t.Errorf("header %s = %q, want %d", bus.HeaderAttempts, h.Get(bus.HeaderAttempts), attempts)
	}
	if h.Get(bus.HeaderOriginTopic) != topic || h.Get(bus.HeaderOriginGroup) != group {
		t.Errorf("origin headers = %q/%q, want %q/%q",
			h.Get(bus.HeaderOriginTopic), h.Get(bus.HeaderOriginGroup), topic, group)
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get(bus.HeaderDeadLetteredAt)); err != nil {
		t.Errorf("header %s: %v", bus.HeaderDeadLetteredAt, err)
	}
	for k, v := range sent.Headers {
		if h.Get(k) != v {
			t.Errorf("dead letter lost header %q=%q (has %q)", k, v, h.Get(k))
		}
	}
}

func (s *suite) testDeadLetterAfterMaxAttempts(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Group: "senders", MaxAttempts: 3})
	dlq := s.deadLetters(t, b, topic)
	poison := bus.NewMessage([]byte("poison"))
	poison.Key = "k1"
	poison.Headers["tenant"] = "acme"
	healthy := bus.NewMessage([]byte("healthy"))
	s.publish(t, b, topic, poison, healthy)

	attempts := 0
	for handled := false; !handled || attempts < 3; {
		d := s.receive(t, sub)
		switch d.Message().ID {
		case healthy.ID:
			ack(t, d)
			handled = true
		case poison.ID:
			attempts++
			if d.Message().Attempt != attempts {
				t.Fatalf("poison Attempt = %d, want %d", d.Message().Attempt, attempts)
			}
			nack(t, d, bus.NackOptions{Reason: fmt.Errorf("gateway said 503 on try %d", attempts)})
		default:
			t.Fatalf("unexpected message %q", d.Message().Body)
		}
	}
	d := s.receive(t, dlq)
	checkDeadLetter(t, d.Message(), poison, topic, "senders", "gateway said 503 on try 3", 3)
	ack(t, d)
	s.expectNothing(t, sub, 300*time.Millisecond)
}

func (s *suite) testDeadLetterAtOnce(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 10})
	dlq := s.deadLetters(t, b, topic)
	m := bus.NewMessage([]byte("undecodable"))
	s.publish(t, b, topic, m)
	d := s.receive(t, sub)
	nack(t, d, bus.NackOptions{DeadLetter: true, Reason: errors.New("payload does not decode")})
	got := s.receive(t, dlq)
	checkDeadLetter(t, got.Message(), m, topic, bus.DefaultGroup, "payload does not decode", 1)
	ack(t, got)
	s.expectNothing(t, sub, 300*time.Millisecond)
}

// A Nack that asks both to postpone and to dead-letter dead-letters: the
// explicit end wins, and the message is kept with its reason.
func (s *suite) testDeadLetterWinsOverPostpone(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 10})
	dlq := s.deadLetters(t, b, topic)
	m := bus.NewMessage([]byte("both"))
	s.publish(t, b, topic, m)
	d := s.receive(t, sub)
	nack(t, d, bus.NackOptions{DeadLetter: true, Postpone: true, Delay: 100 * time.Millisecond, Reason: errors.New("refused for good")})
	got := s.receive(t, dlq)
	checkDeadLetter(t, got.Message(), m, topic, bus.DefaultGroup, "refused for good", 1)
	ack(t, got)
	s.expectNothing(t, sub, 500*time.Millisecond)
}

func (s *suite) testPostponeKeepsAttempt(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	// One attempt only: a postponed delivery must not use it up.
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 1})
	m := bus.NewMessage([]byte("not yet"))
	s.publish(t, b, topic, m)
	for range 2 {
		d := s.receive(t, sub)
		if d.Message().ID != m.ID || d.Message().Attempt != 1 {
			t.Fatalf("received %q attempt %d, want the postponed message on attempt 1", d.Message().Body, d.Message().Attempt)
		}
		nack(t, d, bus.NackOptions{Postpone: true, Delay: 100 * time.Millisecond})
	}
	d := s.receive(t, sub)
	if d.Message().ID != m.ID || d.Message().Attempt != 1 {
		t.Fatalf("received %q attempt %d, want the postponed message on attempt 1", d.Message().Body, d.Message().Attempt)
	}
	ack(t, d)
	s.expectNothing(t, sub, 300*time.Millisecond)
}

func (s *suite) testOrderPerKey(t *testing.T) {
	if !s.cfg.Features.OrderedPerKey {
		t.Skip("backend does not declare Features.OrderedPerKey")
	}
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: 1})
	const keys, per = 5, 40
	var want []*bus.Message
	for i := range per {
		for k := range keys {
			m := bus.NewMessage([]byte(strconv.Itoa(i)))
			m.Key = "key-" + strconv.Itoa(k)
			want = append(want, m)
		}
	}
	// Half in one batch, half one by one: order holds across both paths.
	s.publish(t, b, topic, want[:len(want)/2]...)
	for _, m := range want[len(want)/2:] {
		s.publish(t, b, topic, m)
	}
	got := s.collect(t, sub, len(want))
	s.checkOnce(t, want, got)
	last := map[string]int{}
	for _, m := range got {
		n, _ := strconv.Atoi(string(m.Body))
		if prev, ok := last[m.Key]; ok && n != prev+1 {
			t.Fatalf("key %s: message %d arrived after %d", m.Key, n, prev)
		}
		last[m.Key] = n
	}
}

func (s *suite) testPrefetchWindow(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	window := s.cfg.window(2)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{Prefetch: window})
	s.publish(t, b, topic, messages("window", window+1)...)
	first := s.receive(t, sub)
	for range window - 1 {
		s.receive(t, sub)
	}
	// The window is full until a delivery is settled.
	s.expectNothing(t, sub, 300*time.Millisecond)
	ack(t, first)
	s.receive(t, sub)
}

func (s *suite) testSettleTwice(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{})
	s.publish(t, b, topic, messages("twice", 1)...)
	d := s.receive(t, sub)
	ack(t, d)
	if err := d.Ack(context.Background()); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("second Ack: %v, want ErrAlreadyAcked", err)
	}
	if err := d.Nack(context.Background(), bus.NackOptions{}); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("Nack after Ack: %v, want ErrAlreadyAcked", err)
	}
	s.expectNothing(t, sub, 300*time.Millisecond)
}

func (s *suite) testCancelAndClose(t *testing.T) {
	b := s.cfg.Connect(t)
	topic := s.topic(t)
	sub, err := b.Subscribe(s.ctx(t), topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}

	// A cancelled context ends a blocked Receive.
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := sub.Receive(ctx); res <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := waitErr(t, res); !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive after cancel: %v, want context.Canceled", err)
	}

	// Closing the subscription ends a blocked Receive with ErrClosed.
	go func() { _, err := sub.Receive(context.Background()); res <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := sub.Close(); err != nil {
		t.Fatalf("Subscription.Close: %v", err)
	}
	if err := waitErr(t, res); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Receive after Close: %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Subscription.Close: %v", err)
	}

	// A cancelled context fails Publish without hanging.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := b.Publish(cctx, topic, bus.NewMessage([]byte("x"))); err == nil {
		t.Fatal("Publish with a cancelled context succeeded")
	}

	// A closed connection refuses work with ErrClosed; Close is idempotent.
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish(context.Background(), topic, bus.NewMessage([]byte("x"))); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(context.Background(), topic, bus.SubscribeOptions{}); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func waitErr(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Receive did not return within 10s")
		return nil
	}
}

func (s *suite) testNoGoroutineLeft(t *testing.T) {
	before := leak.Take()
	func() {
		b := s.cfg.Connect(t)
		defer b.Close()
		topic := s.topic(t)
		sub, err := b.Subscribe(s.ctx(t), topic, bus.SubscribeOptions{Prefetch: 4})
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if err := b.Publish(s.ctx(t), topic, messages("leak", 4)...); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		for range 2 {
			ack(t, s.receive(t, sub))
		}
		s.receive(t, sub) // left unsettled on purpose
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: topic, Subscribe: bus.SubscribeOptions{Group: "leak"}},
			func(context.Context, *bus.Message) error { return nil })
		if err != nil {
			t.Fatalf("NewConsumer: %v", err)
		}
		if err := c.Run(ctx); err != nil {
			t.Fatalf("Consumer.Run: %v", err)
		}
	}()
	// Patience for clients whose background goroutines end a moment after
	// Close returns, on a loaded machine; a real leak outlasts it.
	if left := before.Since(leak.Patience); len(left) > 0 {
		t.Fatalf("%d goroutine(s) left after Close:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

func (s *suite) testLargeMessages(t *testing.T) {
	limit := s.cfg.Features.MaxMessageSize
	if limit <= 0 {
		t.Skip("backend declares no Features.MaxMessageSize")
	}
	b := s.connect(t)
	topic := s.topic(t)
	sub := s.subscribe(t, b, topic, bus.SubscribeOptions{})

	big := bus.NewMessage(nil)
	big.Body = bytes.Repeat([]byte{'x'}, limit-big.Size())
	if big.Size() != limit {
		t.Fatalf("test built a %d-byte message, want %d", big.Size(), limit)
	}
	s.publish(t, b, topic, big)
	d := s.receive(t, sub)
	if !bytes.Equal(d.Message().Body, big.Body) {
		t.Fatalf("message at the size limit came back with %d body bytes, want %d", len(d.Message().Body), len(big.Body))
	}
	ack(t, d)

	over := bus.NewMessage(bytes.Repeat([]byte{'y'}, limit))
	small := bus.NewMessage([]byte("small"))
	err := b.Publish(s.ctx(t), topic, small, over)
	var se *bus.SizeError
	if !errors.Is(err, bus.ErrTooLarge) || !errors.As(err, &se) {
		t.Fatalf("Publish over the limit: %v, want a *bus.SizeError matching ErrTooLarge", err)
	}
	if se.Index != 1 || se.Limit != limit || se.Size != over.Size() {
		t.Fatalf("SizeError = %+v, want index 1, size %d, limit %d", se, over.Size(), limit)
	}
	// The refused batch is refused whole: its valid message is not sent.
	marker := bus.NewMessage([]byte("marker"))
	s.publish(t, b, topic, marker)
	d = s.receive(t, sub)
	if d.Message().ID != marker.ID {
		t.Fatalf("received %q, want only the marker after a refused batch", truncate(d.Message().Body))
	}
	ack(t, d)
}

func (s *suite) testDeadConsumerRedelivery(t *testing.T) {
	topic := s.topic(t)
	held := s.cfg.window(5)
	opts := bus.SubscribeOptions{Group: "crashy", Prefetch: held}
	dying := s.cfg.Connect(t)
	sub := s.subscribe(t, dying, topic, opts)
	want := messages("orphan", held)
	s.publish(t, s.connect(t), topic, want...)
	for range want {
		s.receive(t, sub) // taken, never settled
	}
	// The connection goes away with five deliveries unsettled.
	dying.Close()

	survivor := s.subscribe(t, s.connect(t), topic, opts)
	var got []*bus.Message
	for range want {
		d := s.receiveWithin(t, survivor, s.cfg.RedeliveryWait+s.cfg.timeout())
		if d.Message().Attempt < 2 {
			t.Errorf("redelivered %q with Attempt %d, want >= 2", d.Message().Body, d.Message().Attempt)
		}
		ack(t, d)
		got = append(got, d.Message())
	}
	s.checkOnce(t, want, got)
}

func (s *suite) testConsumerRetriesAndDeadLetters(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	dlq := s.deadLetters(t, b, topic)
	// The group exists before anything is published to it.
	s.subscribe(t, b, topic, bus.SubscribeOptions{MaxAttempts: 4}).Close()
	want := messages("task", 20)
	want[7].Headers["poison"] = "yes"
	s.publish(t, b, topic, want...)

	var (
		mu       sync.Mutex
		attempts = map[string]int{}
		done     = map[string]bool{}
		all      = make(chan struct{})
	)
	handler := func(ctx context.Context, m *bus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[m.ID]++
		if m.Headers.Get("poison") == "yes" {
			return errors.New("poison: always fails")
		}
		if attempts[m.ID] < 3 {
			return fmt.Errorf("transient failure %d", attempts[m.ID])
		}
		if !done[m.ID] {
			done[m.ID] = true
			if len(done) == len(want)-1 {
				close(all)
			}
		}
		return nil
	}
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:       topic,
		Concurrency: 4,
		Subscribe:   bus.SubscribeOptions{MaxAttempts: 4},
		Backoff:     bus.ExponentialBackoff(10*time.Millisecond, 100*time.Millisecond),
	}, handler)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()

	dead := s.receive(t, dlq)
	checkDeadLetter(t, dead.Message(), want[7], topic, bus.DefaultGroup, "poison: always fails", 4)
	ack(t, dead)
	select {
	case <-all:
	case <-time.After(s.cfg.timeout()):
		mu.Lock()
		t.Errorf("only %d of %d messages succeeded", len(done), len(want)-1)
		mu.Unlock()
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatalf("Consumer.Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range want {
		n, exp := attempts[m.ID], map[bool]int{true: 4, false: 3}[m.ID == want[7].ID]
		switch {
		case n > exp && s.cfg.AckedRedelivered != "":
			t.Logf("%s ran %d times, %d expected (%s)", m.Body, n, exp, s.cfg.AckedRedelivered)
		case n != exp:
			t.Errorf("%s ran %d times, want %d", m.Body, n, exp)
		}
	}
}

func (s *suite) testConsumerGracefulShutdown(t *testing.T) {
	b := s.connect(t)
	topic := s.topic(t)
	running := s.cfg.window(2)
	opts := bus.SubscribeOptions{Group: "graceful", Prefetch: running}
	// The group exists before anything is published to it.
	s.subscribe(t, b, topic, opts).Close()
	want := messages("inflight", running+1)
	started := make(chan string, len(want))
	release := make(chan struct{})
	var mu sync.Mutex
	finished := map[string]bool{}
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: topic, Concurrency: 2, Subscribe: opts, ShutdownTimeout: s.cfg.timeout()},
		func(ctx context.Context, m *bus.Message) error {
			started <- m.ID
			<-release
			mu.Lock()
			finished[m.ID] = true
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	s.publish(t, b, topic, want...)
	inFlight := map[string]bool{}
	for range running {
		select {
		case id := <-started:
			inFlight[id] = true
		case <-time.After(s.cfg.timeout()):
			t.Fatal("handlers did not start")
		}
	}
	// Shut down with handlers running: they finish and are acked, the
	// last message stays with the broker.
	cancel()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Consumer.Run: %v", err)
	}
	select {
	case id := <-started:
		t.Fatalf("a handler started (%s) after shutdown began", id)
	default:
	}
	mu.Lock()
	for id := range inFlight {
		if !finished[id] {
			t.Errorf("in-flight message %s did not finish", id)
		}
	}
	mu.Unlock()

	sub := s.subscribe(t, s.connect(t), topic, opts)
	d := s.receiveWithin(t, sub, s.cfg.RedeliveryWait+s.cfg.timeout())
	if inFlight[d.Message().ID] {
		t.Fatalf("message %s finished during shutdown but came back", d.Message().ID)
	}
	ack(t, d)
	s.expectNothing(t, sub, 500*time.Millisecond)
}

func (s *suite) testConsumerOrderedByKey(t *testing.T) {
	if !s.cfg.Features.OrderedPerKey {
		t.Skip("backend does not declare Features.OrderedPerKey")
	}
	b := s.connect(t)
	topic := s.topic(t)
	const keys, per = 4, 25
	var want []*bus.Message
	for i := range per {
		for k := range keys {
			m := bus.NewMessage([]byte(strconv.Itoa(i)))
			m.Key = "key-" + strconv.Itoa(k)
			want = append(want, m)
		}
	}
	// The group exists before anything is published to it.
	s.subscribe(t, b, topic, bus.SubscribeOptions{}).Close()
	s.publish(t, b, topic, want...)
	var (
		mu      sync.Mutex
		last    = map[string]int{}
		running = map[string]bool{}
		count   int
		done    = make(chan struct{})
		fail    = make(chan string, 1)
	)
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: topic, Concurrency: 4, OrderedByKey: true},
		func(ctx context.Context, m *bus.Message) error {
			n, _ := strconv.Atoi(string(m.Body))
			mu.Lock()
			if running[m.Key] {
				select {
				case fail <- "two handlers ran key " + m.Key + " at once":
				default:
				}
			}
			if prev, ok := last[m.Key]; ok && n != prev+1 {
				select {
				case fail <- fmt.Sprintf("key %s: %d ran after %d", m.Key, n, prev):
				default:
				}
			}
			running[m.Key], last[m.Key] = true, n
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running[m.Key] = false
			count++
			if count == len(want) {
				close(done)
			}
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	select {
	case <-done:
	case msg := <-fail:
		t.Error(msg)
	case <-time.After(s.cfg.timeout()):
		t.Error("not every message was handled")
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatalf("Consumer.Run: %v", err)
	}
	select {
	case msg := <-fail:
		t.Error(msg)
	default:
	}
}
