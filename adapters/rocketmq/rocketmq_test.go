package rocketmq_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// options returns the Options of the test cluster's URL
// (OMNIBUS_ROCKETMQ_URL), with quick rebalancing for tests.
func options(t testing.TB) rocketmq.Options {
	t.Helper()
	u, err := url.Parse(brokertest.RocketMQ(t))
	if err != nil {
		t.Fatal(err)
	}
	o, err := rocketmq.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func newBroker(t testing.TB, o rocketmq.Options) *rocketmq.Broker {
	t.Helper()
	b, err := rocketmq.New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	o := options(t)
	probe := newBroker(t, o)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := rocketmq.New(context.Background(), o)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return b
		},
		Features:    probe.Features(),
		TopicPrefix: "omnibus-test",
		Timeout:     30 * time.Second,
	})
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want rocketmq.Options
	}{
		{"rocketmq://", rocketmq.Options{}},
		{"rocketmq://ns1", rocketmq.Options{NameServers: []string{"ns1:9876"}}},
		{"rocketmq://ns1,ns2:9000", rocketmq.Options{NameServers: []string{"ns1:9876", "ns2:9000"}}},
		{"rocketmq://h:1?queues=8&max_message_size=1024&create_topics=false&dial_timeout=2s&request_timeout=3s" +
			"&poll_timeout=1s&commit_interval=250ms&rebalance_interval=2s&drain_timeout=4s",
			rocketmq.Options{NameServers: []string{"h:1"}, Queues: 8, MaxMessageSize: 1024, NoTopicCreation: true,
				DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second, PollTimeout: time.Second,
				CommitInterval: 250 * time.Millisecond, RebalanceInterval: 2 * time.Second, DrainTimeout: 4 * time.Second}},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rocketmq.ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%s): %v", tc.url, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%s) = %+v, want %+v", tc.url, got, tc.want)
		}
	}
	for _, bad := range []string{
		"rocketmq://h?queues=x", "rocketmq://h?nope=1", "rocketmq://h?poll_timeout=-1s", "rocketmq://u:secret@h",
		"rocketmq://h/path", "rocketmq://h?max_message_size=99999999", "rocketmq://h:99999", "rocketmq://h?create_topics=maybe",
	} {
		u, err := url.Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rocketmq.ParseURL(u)
		if !errors.Is(err, bus.ErrBadURL) {
			t.Errorf("ParseURL(%s): %v, want ErrBadURL", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%s) error shows the password: %v", bad, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	// A port nothing listens on: the dial is refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = bus.Open(context.Background(), "rocketmq://"+addr+"?dial_timeout=2s")
	if !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("Open on a closed port: %v, want ErrUnreachable", err)
	}
}

func TestRefusedMessages(t *testing.T) {
	b := newBroker(t, options(t))
	ctx := context.Background()
	topic := brokertest.Name(t)
	bad := bus.NewMessage([]byte("x"))
	bad.Headers["h"] = "a\x01b"
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("ok")), bad); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Publish with a 0x01 header: %v, want ErrInvalidMessage", err)
	}
	if err := b.Publish(ctx, ""); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Publish to an empty topic: %v, want ErrInvalidMessage", err)
	}
	if err := b.Publish(ctx, topic, nil); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("Publish(nil): %v, want ErrInvalidMessage", err)
	}
}

func TestNoTopicCreation(t *testing.T) {
	o := options(t)
	o.NoTopicCreation = true
	b := newBroker(t, o)
	err := b.Publish(context.Background(), brokertest.Name(t), bus.NewMessage([]byte("x")))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Publish to a missing topic without creation: %v, want a does-not-exist error", err)
	}
}

// TestNewGroupReadsFromStart: a group created after messages were
// published receives them, as the package documents.
func TestNewGroupReadsFromStart(t *testing.T) {
	b := newBroker(t, options(t))
	ctx := context.Background()
	topic := brokertest.Name(t)
	early := bus.NewMessage([]byte("before any group"))
	if err := b.Publish(ctx, topic, early); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "late"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d, err := sub.Receive(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().ID != early.ID {
		t.Fatalf("late group got %q", d.Message().Body)
	}
	d.Ack(ctx)
}

// TestDescribe: the broker reports its version and flush mode, which the
// benchmark's probe records.
func TestDescribe(t *testing.T) {
	b := newBroker(t, options(t))
	ds, err := b.Describe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 || !strings.HasPrefix(ds[0].Version, "V") || ds[0].Config["flushDiskType"] == "" {
		t.Fatalf("Describe = %+v, want a version and a flushDiskType", ds)
	}
	t.Logf("%s: %s, flushDiskType=%s", ds[0].Addr, ds[0].Version, ds[0].Config["flushDiskType"])
}

// TestCompetingSubscriptionsOfOneBroker: subscriptions of one group opened
// on one Broker are distinct members, which share the queues; each
// message reaches one of them, once.
func TestCompetingSubscriptionsOfOneBroker(t *testing.T) {
	b := newBroker(t, options(t))
	ctx := context.Background()
	topic := brokertest.Name(t)
	opts := bus.SubscribeOptions{Group: "workers", Prefetch: 10}
	subs := make([]bus.Subscription, 3)
	for i := range subs {
		s, err := b.Subscribe(ctx, topic, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs[i] = s
	}
	var msgs []*bus.Message
	for i := range 120 {
		m := bus.NewMessage([]byte(strconv.Itoa(i)))
		m.Key = "k" + strconv.Itoa(i%12)
		msgs = append(msgs, m)
	}
	if err := b.Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		per  = make([]int, len(subs))
		wg   sync.WaitGroup
	)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				d, err := s.Receive(rctx)
				if err != nil {
					return
				}
				d.Ack(ctx)
				mu.Lock()
				seen[d.Message().ID]++
				per[i]++
				if len(seen) == len(msgs) {
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(msgs) {
		t.Fatalf("received %d of %d messages", len(seen), len(msgs))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %s received %d times", id, n)
		}
	}
	t.Logf("messages per subscription: %v", per)
}

// TestCompressedRoundTrip: with Options.Compression, long bodies go
// compressed (their batch apart from the short ones, whose system flag
// differs) and come back whole.
func TestCompressedRoundTrip(t *testing.T) {
	for _, c := range []rocketmq.Compression{rocketmq.CompressionZlib, rocketmq.CompressionLZ4, rocketmq.CompressionZstd} {
		t.Run(c.String(), func(t *testing.T) {
			o := options(t)
			o.Compression, o.CompressOver = c, 1024
			b := newBroker(t, o)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			topic := brokertest.Name(t)
			long := []byte(strings.Repeat("a compressible body ", 500))
			msgs := []*bus.Message{bus.NewMessage(long), bus.NewMessage([]byte("short")), bus.NewMessage(long)}
			if err := b.Publish(ctx, topic, msgs...); err != nil {
				t.Fatal(err)
			}
			sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g"})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			want := map[string][]byte{}
			for _, m := range msgs {
				want[m.ID] = m.Body
			}
			for len(want) > 0 {
				d, err := sub.Receive(ctx)
				if err != nil {
					t.Fatalf("%d messages not received: %v", len(want), err)
				}
				body, ok := want[d.Message().ID]
				if !ok || string(d.Message().Body) != string(body) {
					t.Fatalf("received %q (%d bytes), want one of the sent bodies", d.Message().ID, len(d.Message().Body))
				}
				delete(want, d.Message().ID)
				d.Ack(ctx)
			}
		})
	}
}

// TestUninflatableIsDelivered: a body stored compressed that inflates past
// the consumer's MaxInflatedSize comes as stored, with the reason in
// HeaderBodyError, rather than being skipped; which also shows that the
// broker holds the compressed body.
func TestUninflatableIsDelivered(t *testing.T) {
	o := options(t)
	o.Compression, o.CompressOver = rocketmq.CompressionZstd, 1024
	pub := newBroker(t, o)
	o.Compression, o.MaxInflatedSize = rocketmq.CompressionNone, 2048
	con := newBroker(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := brokertest.Name(t)
	body := []byte(strings.Repeat("compressible ", 1000)) // 13 kB, well past 2 kB
	m := bus.NewMessage(body)
	if err := pub.Publish(ctx, topic, m); err != nil {
		t.Fatal(err)
	}
	sub, err := con.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := d.Message()
	if got.ID != m.ID || got.Headers[rocketmq.HeaderBodyError] == "" || len(got.Body) >= len(body) {
		t.Fatalf("got %s with %d bytes and headers %v; want %s, its compressed body and %s", got.ID, len(got.Body), got.Headers, m.ID, rocketmq.HeaderBodyError)
	}
	t.Logf("%s: %s (%d bytes as stored)", rocketmq.HeaderBodyError, got.Headers[rocketmq.HeaderBodyError], len(got.Body))
	d.Ack(ctx)
}
