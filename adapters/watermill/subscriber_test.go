package watermill_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibus-mq/omnibus/internal/leak"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	wmbridge "github.com/omnibus-mq/omnibus/adapters/watermill"
	"github.com/omnibus-mq/omnibus/bus"
)

func newMemory(t *testing.T) *memory.Broker {
	t.Helper()
	m := memory.New(memory.Options{})
	t.Cleanup(func() { m.Close() })
	return m
}

func newSubscriber(t *testing.T, s bus.Subscriber, cfg wmbridge.SubscriberConfig) *wmbridge.Subscriber {
	t.Helper()
	sub, err := wmbridge.NewSubscriber(s, cfg)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed, want a message")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

func nothing(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s", m.UUID)
		}
		t.Fatal("channel closed, want it open and quiet")
	case <-time.After(d):
	}
}

// closedWithin checks that ch is closed within d; with d zero, that it is
// closed already.
func closedWithin(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	if d == 0 {
		select {
		case m, ok := <-ch:
			if ok {
				t.Fatalf("message %s on a channel that should be closed", m.UUID)
			}
		default:
			t.Fatal("channel not closed")
		}
		return
	}
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("channel not closed within %v", d)
		}
	}
}

func TestSubscriberAckNackAndMetadata(t *testing.T) {
	defer leak.Check(t)()
	mem := newMemory(t)
	pub := wmbridge.NewPublisher(mem)
	sub := newSubscriber(t, mem, wmbridge.SubscriberConfig{})
	ch, err := sub.Subscribe(context.Background(), "greetings")
	if err != nil {
		t.Fatal(err)
	}

	sent := message.NewMessage("0196f5a0-0000-7000-8000-000000000001", []byte("hello"))
	sent.Metadata["lang"] = "en"
	sent.Metadata[wmbridge.MetadataKey] = "user-1"
	sent.Metadata[wmbridge.MetadataAttempt] = "9" // dropped: the broker counts
	if err := pub.Publish("greetings", sent); err != nil {
		t.Fatal(err)
	}

	m := next(t, ch)
	if m.UUID != sent.UUID || string(m.Payload) != "hello" || m.Metadata["lang"] != "en" ||
		m.Metadata[wmbridge.MetadataKey] != "user-1" || m.Metadata[wmbridge.MetadataAttempt] != "1" {
		t.Fatalf("received %s %q %v", m.UUID, m.Payload, m.Metadata)
	}
	if _, err := strconv.ParseInt(m.Metadata[wmbridge.MetadataPublishedAt], 10, 64); err != nil {
		t.Fatalf("published-at metadata: %v", err)
	}
	// Watermill's flow: nothing more until this one is settled.
	if err := pub.Publish("greetings", message.NewMessage("second", nil)); err != nil {
		t.Fatal(err)
	}
	nothing(t, ch, 100*time.Millisecond)
	m.Nack()
	select {
	case <-m.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("message context not cancelled after Nack")
	}

	// The redelivery and the second message come in the broker's order.
	attempts := map[string]string{}
	for range 2 {
		m := next(t, ch)
		attempts[m.UUID] = m.Metadata[wmbridge.MetadataAttempt]
		m.Ack()
	}
	if len(attempts) != 2 || attempts[sent.UUID] != "2" || attempts["second"] != "1" {
		t.Fatalf("got attempts %v, want the redelivery on 2 and the second message on 1", attempts)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, ch, 0)
	if st := mem.GroupStats("greetings", bus.DefaultGroup); st != (memory.Stats{}) {
		t.Fatalf("group stats %+v after acking everything", st)
	}
}

func TestSubscriberUnlimitedAttemptsByDefault(t *testing.T) {
	mem := newMemory(t)
	sub := newSubscriber(t, mem, wmbridge.SubscriberConfig{})
	ch, err := sub.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := wmbridge.NewPublisher(mem).Publish("t", message.NewMessage("m", nil)); err != nil {
		t.Fatal(err)
	}
	// More nacks than bus.DefaultMaxAttempts: watermill expects a nacked
	// message back, however often.
	for i := 1; i <= bus.DefaultMaxAttempts+2; i++ {
		m := next(t, ch)
		if m.Metadata[wmbridge.MetadataAttempt] != strconv.Itoa(i) {
			t.Fatalf("attempt metadata %q, want %d", m.Metadata[wmbridge.MetadataAttempt], i)
		}
		m.Nack()
	}
	next(t, ch).Ack()
}

func TestSubscriberMaxAttemptsDeadLetters(t *testing.T) {
	mem := newMemory(t)
	sub := newSubscriber(t, mem, wmbridge.SubscriberConfig{Group: "senders", MaxAttempts: 2, DeadLetterTopic: "dead"})
	ch, err := sub.Subscribe(context.Background(), "sms")
	if err != nil {
		t.Fatal(err)
	}
	dlq := newSubscriber(t, mem, wmbridge.SubscriberConfig{})
	dead, err := dlq.Subscribe(context.Background(), "dead")
	if err != nil {
		t.Fatal(err)
	}
	if err := wmbridge.NewPublisher(mem).Publish("sms", message.NewMessage("poison", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	next(t, ch).Nack()
	next(t, ch).Nack()
	d := next(t, dead)
	if d.UUID != "poison" || d.Metadata[bus.HeaderError] != wmbridge.ErrNacked.Error() ||
		d.Metadata[bus.HeaderAttempts] != "2" || d.Metadata[bus.HeaderOriginGroup] != "senders" {
		t.Fatalf("dead letter %s %v", d.UUID, d.Metadata)
	}
	d.Ack()
	nothing(t, ch, 100*time.Millisecond)
}

func TestSubscriberContextAndClose(t *testing.T) {
	defer leak.Check(t)()
	mem := newMemory(t)
	sub := newSubscriber(t, mem, wmbridge.SubscriberConfig{})
	pub := wmbridge.NewPublisher(mem)

	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	ch, err := sub.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("t", message.NewMessage("1", nil)); err != nil {
		t.Fatal(err)
	}
	m := next(t, ch)
	if m.Context().Value(key{}) != "v" {
		t.Fatal("message context lacks the Subscribe context's values")
	}
	// Cancelling the Subscribe context ends the subscription, cancels the
	// unsettled message's context and gives it back to the broker.
	cancel()
	closedWithin(t, ch, 5*time.Second)
	select {
	case <-m.Context().Done():
	default:
		t.Fatal("unsettled message context not cancelled when the subscription ended")
	}
	m.Ack() // too late: the broker has it back
	if st := mem.GroupStats("t", bus.DefaultGroup); st.Ready != 1 || st.Unsettled != 0 {
		t.Fatalf("group stats %+v, want the message back and ready", st)
	}

	// Close ends every subscription and waits for their channels.
	chs := make([]<-chan *message.Message, 3)
	for i := range chs {
		if chs[i], err = sub.Subscribe(context.Background(), "t"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range chs {
		closedWithin(t, c, 0)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sub.Subscribe(context.Background(), "t"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if err := sub.SubscribeInitialize("t"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("SubscribeInitialize after Close: %v, want ErrClosed", err)
	}
}

func TestSubscriberEndsWithBusSubscriber(t *testing.T) {
	defer leak.Check(t)()
	mem := newMemory(t)
	client := mem.Connect()
	sub := newSubscriber(t, client, wmbridge.SubscriberConfig{})
	ch, err := sub.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	// The bus subscription ends under the bridge: the channel closes.
	client.Close()
	closedWithin(t, ch, 5*time.Second)
	if _, err := sub.Subscribe(context.Background(), "t"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe on a closed client: %v, want ErrClosed", err)
	}
}

func TestSubscriberPrefetch(t *testing.T) {
	mem := newMemory(t)
	sub := newSubscriber(t, mem, wmbridge.SubscriberConfig{Prefetch: 3})
	ch, err := sub.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	pub := wmbridge.NewPublisher(mem)
	for i := range 4 {
		if err := pub.Publish("t", message.NewMessage(strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	held := []*message.Message{next(t, ch), next(t, ch), next(t, ch)}
	nothing(t, ch, 100*time.Millisecond)
	held[0].Ack()
	next(t, ch).Ack()
	for _, m := range held[1:] {
		m.Ack()
	}
}

func TestSubscribeInitializeCreatesGroup(t *testing.T) {
	mem := newMemory(t)
	pub := wmbridge.NewPublisher(mem)
	// A first group exists, so a later group sees only what is published
	// after it was created.
	first := newSubscriber(t, mem, wmbridge.SubscriberConfig{Group: "first"})
	if err := first.SubscribeInitialize("t"); err != nil {
		t.Fatal(err)
	}
	late := newSubscriber(t, mem, wmbridge.SubscriberConfig{Group: "late"})
	if err := late.SubscribeInitialize("t"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("t", message.NewMessage("1", nil)); err != nil {
		t.Fatal(err)
	}
	ch, err := late.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch).Ack()
}

func TestNewSubscriberValidates(t *testing.T) {
	_, err := wmbridge.NewSubscriber(nil, wmbridge.SubscriberConfig{Prefetch: -1, MaxAttempts: -1, NackDelay: -time.Second})
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("NewSubscriber: %v, want a *bus.ConfigError with three problems", err)
	}
	if _, err := wmbridge.NewSubscriber(nil, wmbridge.SubscriberConfig{}); !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("NewSubscriber(nil): %v, want ErrBadConfig", err)
	}
}

func TestPublisher(t *testing.T) {
	mem := newMemory(t)
	pub := wmbridge.NewPublisher(mem)
	s, err := mem.Subscribe(context.Background(), "t", bus.SubscribeOptions{Prefetch: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := message.NewMessage("a", []byte("A"))
	a.Metadata[wmbridge.MetadataPublishedAt] = strconv.FormatInt(at.UnixNano(), 10)
	a.Metadata[wmbridge.MetadataKey] = "k"
	b := message.NewMessage("", []byte("B"))
	if err := pub.Publish("t", a, b); err != nil {
		t.Fatal(err)
	}
	if b.UUID != "" {
		t.Fatal("Publish modified the watermill message")
	}
	d := receive(t, s)
	if m := d.Message(); m.ID != "a" || m.Key != "k" || !m.PublishedAt.Equal(at) || len(m.Headers) != 0 {
		t.Fatalf("received %+v", m)
	}
	if m := receive(t, s).Message(); m.ID == "" || string(m.Body) != "B" {
		t.Fatalf("a message without UUID got ID %q, body %q", m.ID, m.Body)
	}

	// One message's cancelled context cancels the whole batch, which the
	// broker refuses whole.
	ctx, cancel := context.WithCancel(context.Background())
	c := message.NewMessage("c", nil)
	c.SetContext(ctx)
	cancel()
	if err := pub.Publish("t", message.NewMessage("ok", nil), c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled message context: %v, want context.Canceled", err)
	}
	if err := pub.Publish("t", nil); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Publish(nil): %v, want ErrInvalidMessage", err)
	}
	if err := pub.Publish("t"); err != nil {
		t.Fatalf("empty Publish: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("t", message.NewMessage("late", nil)); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	// The wrapped broker stays open.
	if err := mem.Publish(context.Background(), "t", bus.NewMessage(nil)); err != nil {
		t.Fatalf("broker after Publisher.Close: %v", err)
	}
}
