package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// fake is a Driver whose subscriptions hand out what the test feeds them
// and record every call the portable side makes.
type fake struct {
	mu       sync.Mutex
	sent     map[string][]*bus.Message
	subs     []*fakeSub
	closed   int
	sendErr  error
	features bus.Features
}

func (f *fake) Send(_ context.Context, topic string, msgs []*bus.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		return f.sendErr
	}
	if f.sent == nil {
		f.sent = map[string][]*bus.Message{}
	}
	f.sent[topic] = append(f.sent[topic], msgs...)
	return nil
}

func (f *fake) Subscribe(_ context.Context, topic string, opts bus.SubscribeOptions) (Subscription, error) {
	s := &fakeSub{opts: opts, feed: make(chan feedItem, 100), asked: make(chan int, 100)}
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	return s, nil
}

func (f *fake) Features() bus.Features { return f.features }

func (f *fake) Close(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

type feedItem struct {
	d   Delivery
	err error
}

type fakeSub struct {
	opts  bus.SubscribeOptions
	feed  chan feedItem
	asked chan int // the max of each Receive

	mu                  sync.Mutex
	closes              int
	unhanded, unsettled []Delivery
}

func (s *fakeSub) Receive(ctx context.Context, max int) ([]Delivery, error) {
	s.asked <- max
	var out []Delivery
	select {
	case it := <-s.feed:
		if it.err != nil {
			return nil, it.err
		}
		out = append(out, it.d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(out) < max {
		select {
		case it := <-s.feed:
			if it.err != nil {
				return out, nil
			}
			out = append(out, it.d)
		default:
			return out, nil
		}
	}
	return out, nil
}

func (s *fakeSub) Close(_ context.Context, unhanded, unsettled []Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes++
	s.unhanded, s.unsettled = unhanded, unsettled
	return nil
}

type fakeDelivery struct {
	msg       *bus.Message
	settleErr error
	lost      bool
	malformed error

	mu       sync.Mutex
	calls    []string
	dead     *bus.Message
	deadTo   string
	attempts int
	delay    time.Duration
}

func (d *fakeDelivery) Message() *bus.Message { return d.msg }

func (d *fakeDelivery) record(call string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, call)
	return d.settleErr
}

func (d *fakeDelivery) Ack(context.Context) error { return d.record("ack") }

func (d *fakeDelivery) Retry(_ context.Context, delay time.Duration, attempts int) error {
	d.mu.Lock()
	d.delay, d.attempts = delay, attempts
	d.mu.Unlock()
	return d.record("retry")
}

func (d *fakeDelivery) DeadLetter(_ context.Context, topic string, dead *bus.Message) error {
	d.mu.Lock()
	d.dead, d.deadTo = dead, topic
	d.mu.Unlock()
	return d.record("dead")
}

func (d *fakeDelivery) Calls() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.calls, ",")
}

// lostDelivery is a fakeDelivery the broker took back before hand-out.
type lostDelivery struct{ *fakeDelivery }

func (d lostDelivery) HandOff() bool { return !d.lost }

type malformedDelivery struct{ *fakeDelivery }

func (d malformedDelivery) Malformed() error { return d.malformed }

func msg(body string, attempt int) *bus.Message {
	m := bus.NewMessage([]byte(body))
	m.Attempt = attempt
	return m
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, opts bus.SubscribeOptions) (*Broker, *fake, *fakeSub, bus.Subscription) {
	t.Helper()
	f := &fake{}
	b := New(f, Options{Logger: quiet(), Name: "fake"})
	t.Cleanup(func() { b.Close() })
	sub, err := b.Subscribe(context.Background(), "orders", opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, f, f.subs[0], sub
}

func receive(t *testing.T, sub bus.Subscription) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func nothing(t *testing.T, sub bus.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d, err := sub.Receive(ctx); err == nil {
		t.Fatalf("received %q, want nothing", d.Message().Body)
	}
}

func TestPublishChecksBeforeSending(t *testing.T) {
	f := &fake{features: bus.Features{MaxMessageSize: 10}}
	b := New(f, Options{Logger: quiet()})
	ctx := context.Background()
	if err := b.Publish(ctx, "", bus.NewMessage(nil)); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Errorf("empty topic: %v", err)
	}
	if err := b.Publish(ctx, "t", bus.NewMessage([]byte("ok")), bus.NewMessage([]byte("far too long"))); !errors.Is(err, bus.ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	bad := &bus.Message{Headers: bus.Headers{"omnibus-attempt": "3"}}
	if err := b.Publish(ctx, "t", bad); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Errorf("reserved header: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Publish(cancelled, "t", bus.NewMessage(nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if len(f.sent) != 0 {
		t.Fatalf("refused batches reached the driver: %v", f.sent)
	}
	m := &bus.Message{Body: []byte("x")}
	if err := b.Publish(ctx, "t", m); err != nil || m.ID == "" || m.PublishedAt.IsZero() || len(f.sent["t"]) != 1 {
		t.Fatalf("Publish = %v, id %q, sent %v", err, m.ID, f.sent)
	}
	if err := b.Close(); err != nil || f.closed != 1 {
		t.Fatalf("Close = %v, driver closed %d times", err, f.closed)
	}
	if err := b.Close(); err != nil || f.closed != 1 {
		t.Fatalf("second Close = %v, driver closed %d times", err, f.closed)
	}
	if err := b.Publish(ctx, "t", bus.NewMessage(nil)); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{}); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

func TestSubscribeDefaultsAndChecks(t *testing.T) {
	f := &fake{}
	b := New(f, Options{Logger: quiet()})
	defer b.Close()
	ctx := context.Background()
	if _, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{Prefetch: -1, DeadLetterTopic: "t"}); !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("bad options: %v", err)
	} else if ce := (*bus.ConfigError)(nil); !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("bad options: %v, want both problems", err)
	}
	if _, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	want := bus.SubscribeOptions{Group: bus.DefaultGroup, Prefetch: 1, MaxAttempts: bus.DefaultMaxAttempts, DeadLetterTopic: "t.dlq"}
	if got := f.subs[0].opts; got != want {
		t.Fatalf("driver got %+v, want %+v", got, want)
	}
}

func TestSettleOnceAndTheWindow(t *testing.T) {
	_, _, fs, sub := open(t, bus.SubscribeOptions{Prefetch: 2})
	a, b, c := &fakeDelivery{msg: msg("a", 1)}, &fakeDelivery{msg: msg("b", 1)}, &fakeDelivery{msg: msg("c", 1)}
	for _, d := range []*fakeDelivery{a, b, c} {
		fs.feed <- feedItem{d: d}
	}
	da, db := receive(t, sub), receive(t, sub)
	nothing(t, sub) // the window of 2 is full
	if err := da.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := da.Ack(context.Background()); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("second Ack: %v", err)
	}
	if err := da.Nack(context.Background(), bus.NackOptions{}); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("Nack after Ack: %v", err)
	}
	dc := receive(t, sub)
	if string(dc.Message().Body) != "c" || a.Calls() != "ack" {
		t.Fatalf("got %q, a's calls %q", dc.Message().Body, a.Calls())
	}
	for max := range len(fs.asked) {
		if n := <-fs.asked; n > 2 {
			t.Fatalf("Receive %d asked for %d, over the window", max, n)
		}
	}
	// A settlement that fails still settles.
	b.settleErr = errors.New("broker gone")
	if err := db.Ack(context.Background()); err == nil || !strings.Contains(err.Error(), "broker gone") {
		t.Fatalf("failing Ack = %v", err)
	}
	if err := db.Ack(context.Background()); !errors.Is(err, bus.ErrAlreadyAcked) {
		t.Fatalf("Ack after a failed one: %v", err)
	}
}

func TestNackDecides(t *testing.T) {
	reason := errors.New("gateway 503")
	for _, tc := range []struct {
		name     string
		attempt  int
		opts     bus.NackOptions
		want     string
		attempts int
	}{
		{"retry", 1, bus.NackOptions{Delay: time.Second, Reason: reason}, "retry", 1},
		{"negative delay", 2, bus.NackOptions{Delay: -time.Second}, "retry", 2},
		{"last attempt", 3, bus.NackOptions{Reason: reason}, "dead", 3},
		{"at once", 1, bus.NackOptions{DeadLetter: true, Reason: reason}, "dead", 1},
		{"postpone", 3, bus.NackOptions{Postpone: true, Delay: time.Minute}, "retry", 2},
		{"dead letter wins over postpone", 1, bus.NackOptions{Postpone: true, DeadLetter: true, Reason: reason}, "dead", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, fs, sub := open(t, bus.SubscribeOptions{Group: "g", MaxAttempts: 3, DeadLetterTopic: "graveyard"})
			fd := &fakeDelivery{msg: msg("m", tc.attempt)}
			fd.msg.Headers["tenant"] = "acme"
			fs.feed <- feedItem{d: fd}
			if err := receive(t, sub).Nack(context.Background(), tc.opts); err != nil {
				t.Fatal(err)
			}
			if fd.Calls() != tc.want {
				t.Fatalf("driver calls %q, want %q", fd.Calls(), tc.want)
			}
			switch tc.want {
			case "retry":
				if fd.attempts != tc.attempts || fd.delay != max(tc.opts.Delay, 0) {
					t.Fatalf("Retry(delay %v, attempts %d), want (%v, %d)", fd.delay, fd.attempts, max(tc.opts.Delay, 0), tc.attempts)
				}
			case "dead":
				h := fd.dead.Headers
				if fd.deadTo != "graveyard" || h[bus.HeaderError] != "gateway 503" || h[bus.HeaderAttempts] != fmt.Sprint(tc.attempts) ||
					h[bus.HeaderOriginTopic] != "orders" || h[bus.HeaderOriginGroup] != "g" || h["tenant"] != "acme" || fd.dead.ID != fd.msg.ID {
					t.Fatalf("dead letter to %q: %+v", fd.deadTo, fd.dead)
				}
			}
		})
	}
}

func TestReceiptDeadLettersWhatCannotBeHandedOut(t *testing.T) {
	_, _, fs, sub := open(t, bus.SubscribeOptions{MaxAttempts: 2, Prefetch: 4})
	crashed := &fakeDelivery{msg: msg("crashed thrice", 3)}
	garbage := malformedDelivery{&fakeDelivery{msg: msg("garbage", 1), malformed: errors.New("not an envelope")}}
	gone := lostDelivery{&fakeDelivery{msg: msg("taken back", 1), lost: true}}
	fine := &fakeDelivery{msg: msg("fine", 2)}
	for _, d := range []Delivery{crashed, garbage, gone, fine} {
		fs.feed <- feedItem{d: d}
	}
	d := receive(t, sub)
	if string(d.Message().Body) != "fine" {
		t.Fatalf("handed out %q, want only the fine one", d.Message().Body)
	}
	nothing(t, sub)
	if crashed.Calls() != "dead" || !strings.Contains(crashed.dead.Headers[bus.HeaderError], "delivered 2 times without being settled") ||
		crashed.dead.Headers[bus.HeaderAttempts] != "2" {
		t.Fatalf("crashed: calls %q, dead %+v", crashed.Calls(), crashed.dead)
	}
	if garbage.Calls() != "dead" || garbage.dead.Headers[bus.HeaderError] != "not an envelope" {
		t.Fatalf("garbage: calls %q, dead %+v", garbage.Calls(), garbage.dead)
	}
	if gone.Calls() != "" {
		t.Fatalf("a delivery taken back was settled: %q", gone.Calls())
	}
}

func TestCloseGivesBackWhatItHolds(t *testing.T) {
	b, f, fs, sub := open(t, bus.SubscribeOptions{Prefetch: 3})
	ds := []*fakeDelivery{{msg: msg("handed", 1)}, {msg: msg("settled", 1)}, {msg: msg("buffered", 1)}}
	for _, d := range ds {
		fs.feed <- feedItem{d: d}
	}
	handed, settled := receive(t, sub), receive(t, sub)
	if err := settled.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The third is in the buffer by now, or soon.
	for deadline := time.Now().Add(5 * time.Second); ; {
		s := sub.(*subscription)
		s.mu.Lock()
		n := len(s.buf)
		s.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if fs.closes != 1 || f.closed != 1 || len(fs.unhanded) != 1 || fs.unhanded[0] != ds[2] || len(fs.unsettled) != 1 || fs.unsettled[0] != ds[0] {
		t.Fatalf("Close: %d closes, unhanded %v, unsettled %v", fs.closes, fs.unhanded, fs.unsettled)
	}
	if err := handed.Ack(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	if _, err := sub.Receive(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Receive after Close: %v", err)
	}
}

func TestReceiveFailures(t *testing.T) {
	_, _, fs, sub := open(t, bus.SubscribeOptions{})
	fs.feed <- feedItem{err: errors.New("connection reset")}
	fs.feed <- feedItem{err: fmt.Errorf("%w: user omnibus", bus.ErrAuth)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sub.Receive(ctx); !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("Receive = %v, want the lasting failure and not the passing one", err)
	}
	fs.feed <- feedItem{d: &fakeDelivery{msg: msg("after", 1)}}
	if d := receive(t, sub); string(d.Message().Body) != "after" {
		t.Fatalf("got %q", d.Message().Body)
	} else if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	fs.feed <- feedItem{err: fmt.Errorf("%w: the server went away", bus.ErrClosed)}
	for range 2 {
		if _, err := sub.Receive(ctx); !errors.Is(err, bus.ErrClosed) || !strings.Contains(err.Error(), "went away") {
			t.Fatalf("Receive after the driver ended = %v", err)
		}
	}
}

func TestShutdownBoundedByContext(t *testing.T) {
	f := &fake{}
	b := New(f, Options{Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with nothing under way = %v", err)
	}
	if f.closed != 1 {
		t.Fatalf("driver closed %d times", f.closed)
	}
}

func TestFromChannel(t *testing.T) {
	ch := make(chan int, 5)
	for i := range 4 {
		ch <- i
	}
	mk := func(i int) Delivery { return &fakeDelivery{msg: msg(fmt.Sprint(i), 1)} }
	ds, closed, err := FromChannel(context.Background(), ch, 3, mk)
	if err != nil || closed || len(ds) != 3 {
		t.Fatalf("FromChannel = %d deliveries, closed %v, %v; want 3 of the 4 ready", len(ds), closed, err)
	}
	close(ch)
	ds, closed, err = FromChannel(context.Background(), ch, 3, mk)
	if err != nil || !closed || len(ds) != 1 || string(ds[0].Message().Body) != "3" {
		t.Fatalf("after close: %d deliveries, closed %v, %v; want the last one and closed", len(ds), closed, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := FromChannel(ctx, make(chan int), 3, mk); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty channel: %v, want the context's error", err)
	}
}
