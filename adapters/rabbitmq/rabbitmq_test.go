package rabbitmq_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func amqpURL(t testing.TB) string { return brokertest.AMQP(t) }

// oneNode is amqpURL with its first host alone, for clients that take one
// (amqp091's Dial, pika): the test URL may name a cluster's nodes.
func oneNode(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host, _, _ = strings.Cut(u.Host, ",")
	return u.String()
}

func connect(t testing.TB, opts rabbitmq.Options) *rabbitmq.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := rabbitmq.New(ctx, opts)
	if err != nil {
		t.Fatalf("rabbitmq.New: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	url := amqpURL(t)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			return connect(t, rabbitmq.Options{URL: url, MaxMessageSize: 1 << 20})
		},
		Features: bus.Features{OrderedPerKey: true, Persistent: true, NackDelay: true, MaxMessageSize: 1 << 20},
	})
}

func TestConformanceQuorumQueues(t *testing.T) {
	url := amqpURL(t)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := bus.Open(context.Background(), url+"?queue_type=quorum&max_message_size=65536")
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return b
		},
		Features:    bus.Features{OrderedPerKey: true, Persistent: true, NackDelay: true, MaxMessageSize: 65536},
		TopicPrefix: "bustest-quorum",
	})
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		want error
	}{
		{"amqp://guest:guest@127.0.0.1:5672/?topology=star&queue_type=stream&max_message_size=x", bus.ErrBadURL},
		{"amqp://u:hunter2@127.0.0.1:1/", bus.ErrUnreachable},
	} {
		_, err := bus.Open(ctx, tc.url)
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) = %v, want %v", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	_, err := bus.Open(ctx, "amqp://guest:guest@127.0.0.1:5672/?topology=star&queue_type=stream&max_message_size=x")
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want all 3 problems reported at once, got %v", err)
	}
}

func TestSilentServerIsBounded(t *testing.T) {
	// A server that accepts TCP but never answers the AMQP handshake: only
	// the dial timeout can end the wait.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, err = rabbitmq.New(context.Background(), rabbitmq.Options{
		URL: "amqp://guest:guest@" + ln.Addr().String() + "/", DialTimeout: 500 * time.Millisecond})
	if !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("New = %v, want ErrUnreachable", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("New returned after %v with a 500ms dial timeout", waited)
	}
}

func TestWrongPassword(t *testing.T) {
	url := amqpURL(t)
	bad := strings.Replace(url, "guest:guest@", "guest:wrong-pw@", 1)
	_, err := rabbitmq.New(context.Background(), rabbitmq.Options{URL: bad})
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("New with a wrong password = %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

// A URL naming several nodes connects to one that answers, and fails
// with ErrUnreachable, naming every node, when none does.
func TestSeveralNodes(t *testing.T) {
	u, err := url.Parse(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	live := u.Host
	if u.Port() == "" {
		live = net.JoinHostPort(u.Hostname(), "5672")
	}
	u.Host = deadAddr + "," + live
	b := connect(t, rabbitmq.Options{URL: u.String(), DialTimeout: 2 * time.Second})
	defer b.Close()
	topic := brokertest.Name(t)
	sub := brokertest.Subscribe(t, b, topic, bus.SubscribeOptions{})
	brokertest.Publish(t, b, topic, bus.NewMessage([]byte("through the second node")))
	brokertest.Ack(t, brokertest.Receive(t, sub, 10*time.Second))

	u.Host = deadAddr + "," + deadAddr
	_, err = rabbitmq.New(context.Background(), rabbitmq.Options{URL: u.String(), DialTimeout: time.Second})
	if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "none of the 2 nodes") {
		t.Fatalf("New with no node answering: %v, want ErrUnreachable naming both nodes", err)
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Fatalf("the error shows the password: %v", err)
	}
}
