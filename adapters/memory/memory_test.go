package memory_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
)

func TestConformance(t *testing.T) {
	b := memory.New(memory.Options{MaxMessageSize: 1 << 20})
	defer b.Close()
	bustest.Run(t, bustest.Config{
		Connect:  func(testing.TB) bus.Broker { return b.Connect() },
		Features: b.Features(),
	})
}

func TestConformanceThroughURL(t *testing.T) {
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := bus.Open(context.Background(), "mem://conformance?max_message_size=65536")
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return b
		},
		Features: bus.Features{OrderedPerKey: true, NackDelay: true, MaxMessageSize: 65536},
	})
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		want error
	}{
		{"mem://", nil},
		{"mem://orders", nil},
		{"MEM://orders", nil},
		{"mem://sized?max_message_size=-1", nil},
		{"mem://x/path", bus.ErrBadURL},
		{"mem://x?max_message_size=abc", bus.ErrBadURL},
		{"mem://x?max_message_size=0", bus.ErrBadURL},
		{"mem://x?colour=blue", bus.ErrBadURL},
		{"nosuch://host", bus.ErrUnknownScheme},
		{"://nothing", bus.ErrBadURL},
		{"localhost:5672", bus.ErrUnknownScheme},
	} {
		b, err := bus.Open(ctx, tc.url)
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) error = %v, want %v", tc.url, err, tc.want)
		}
		if b != nil {
			b.Close()
		}
	}
}

func TestOpenReportsEveryProblem(t *testing.T) {
	_, err := bus.Open(context.Background(), "mem://x?max_message_size=abc&colour=blue")
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("Open error = %v, want a ConfigError with 2 problems", err)
	}
}

func TestOpenSharesNamedBroker(t *testing.T) {
	ctx := context.Background()
	a, err := bus.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := bus.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe(ctx, "t", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "t", bus.NewMessage([]byte("hello"))); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil || string(d.Message().Body) != "hello" {
		t.Fatalf("Receive = %v, %v; want the message published through the other client", d, err)
	}
	if _, err := bus.Open(ctx, "mem://shared-test?max_message_size=10"); !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("Open with other options: %v, want ErrBadConfig", err)
	}
}

func TestBacklogWaitsForFirstGroup(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Options{})
	defer b.Close()
	if err := b.Publish(ctx, "early", bus.NewMessage([]byte("before any group"))); err != nil {
		t.Fatal(err)
	}
	first, err := b.Subscribe(ctx, "early", bus.SubscribeOptions{Group: "first"})
	if err != nil {
		t.Fatal(err)
	}
	late, err := b.Subscribe(ctx, "early", bus.SubscribeOptions{Group: "late"})
	if err != nil {
		t.Fatal(err)
	}
	// The message is ready, or already taken into the subscription's window.
	if st := b.GroupStats("early", "first"); st.Ready+st.Unsettled != 1 {
		t.Fatalf("first group holds %d ready + %d unsettled, want the 1 message published before it", st.Ready, st.Unsettled)
	}
	if st := b.GroupStats("early", "late"); st.Ready+st.Unsettled != 0 {
		t.Fatalf("late group holds %d ready + %d unsettled, want 0", st.Ready, st.Unsettled)
	}
	d, err := first.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.Ack(ctx)
	late.Close()
}

func TestSettleAfterCloseIsErrClosed(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Options{})
	defer b.Close()
	b.Publish(ctx, "t", bus.NewMessage([]byte("x")))
	sub, _ := b.Subscribe(ctx, "t", bus.SubscribeOptions{})
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	for range 2 {
		if err := d.Ack(ctx); !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("Ack after Close = %v, want ErrClosed every time", err)
		}
	}
}

func TestClosedNamedBrokerIsReplaced(t *testing.T) {
	ctx := context.Background()
	b, err := memory.Shared("replaced", memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	c, err := bus.Open(ctx, "mem://replaced")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(ctx, "t", bus.NewMessage([]byte("x"))); err != nil {
		t.Fatalf("Publish on a reopened name = %v, want a working broker", err)
	}
}

func TestSubscribeRacingCloseLeavesNoGroup(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Options{})
	defer b.Close()
	for i := range 200 {
		c := b.Connect()
		topic := "race-" + strconv.Itoa(i)
		done := make(chan error, 1)
		go func() {
			_, err := c.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g"})
			done <- err
		}()
		c.Close()
		if err := <-done; err != nil {
			if st := b.GroupStats(topic, "g"); st != (memory.Stats{}) {
				t.Fatalf("failed Subscribe left group state %+v", st)
			}
			// The message must wait for a real first group, not a phantom one.
			b.Publish(ctx, topic, bus.NewMessage([]byte("x")))
			sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "real"})
			if err != nil {
				t.Fatal(err)
			}
			// Ready, or already taken into the subscription's window.
			if st := b.GroupStats(topic, "real"); st.Ready+st.Unsettled != 1 {
				t.Fatalf("first real group holds %+v, want the 1 message", st)
			}
			sub.Close()
		}
	}
}
