package rabbitmq_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// management returns the base URL of RabbitMQ's management API.
func management() string {
	if u := os.Getenv("OMNIBUS_RABBITMQ_MANAGEMENT_URL"); u != "" {
		return u
	}
	return "http://guest:guest@127.0.0.1:15672"
}

// dropConnections makes RabbitMQ close every connection with the given
// client-provided name, as a network failure or broker restart would.
func dropConnections(t *testing.T, name string) int {
	t.Helper()
	base, _ := url.Parse(management())
	req, _ := http.NewRequest("GET", base.JoinPath("/api/connections").String(), nil)
	pw, _ := base.User.Password()
	req.SetBasicAuth(base.User.Username(), pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	defer resp.Body.Close()
	var conns []struct {
		Name  string `json:"name"`
		Props struct {
			Name string `json:"connection_name"`
		} `json:"client_properties"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&conns); err != nil {
		t.Fatalf("management API: %v", err)
	}
	n := 0
	for _, c := range conns {
		if c.Props.Name != name {
			continue
		}
		del, _ := http.NewRequest("DELETE", base.JoinPath("/api/connections", c.Name).String(), nil)
		del.SetBasicAuth(base.User.Username(), pw)
		del.Header.Set("X-Reason", "omnibus reconnect test")
		r, err := http.DefaultClient.Do(del)
		if err != nil {
			t.Fatalf("close connection: %v", err)
		}
		r.Body.Close()
		n++
	}
	return n
}

func TestReconnectResumesPublishingAndConsuming(t *testing.T) {
	amqp := amqpURL(t)
	name := "omnibus-reconnect-" + bus.NewID()
	b := connect(t, rabbitmq.Options{URL: amqp, ConnectionName: name, ReconnectBackoff: 50 * time.Millisecond})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := "reconnect-" + bus.NewID()
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g", Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	before := bus.NewMessage([]byte("taken before the loss"))
	if err := b.Publish(ctx, topic, before); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The management API needs a moment to list a new connection.
	deadline := time.Now().Add(20 * time.Second)
	for dropConnections(t, name) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection never appeared in the management API")
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The delivery's channel is gone: acking it must fail, and RabbitMQ
	// must deliver it again after the subscription resumes.
	time.Sleep(100 * time.Millisecond)
	if err := d.Ack(ctx); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Ack after the connection dropped = %v, want ErrClosed", err)
	}

	// Publishing goes on: an attempt during the outage fails loudly or
	// waits; none is silently dropped.
	after := bus.NewMessage([]byte("published across the loss"))
	for {
		err := b.Publish(ctx, topic, after)
		if err == nil {
			break
		}
		var pe *bus.PublishError
		if !errors.As(err, &pe) && ctx.Err() == nil {
			t.Fatalf("Publish during the outage = %v, want a *bus.PublishError or success", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("Publish never succeeded after the reconnect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	got := map[string]int{}
	for got[before.ID] == 0 || got[after.ID] == 0 {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after reconnect: %v (have %v)", err, got)
		}
		got[d.Message().ID]++
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack after reconnect: %v", err)
		}
	}
}

func TestUnroutableIsAnError(t *testing.T) {
	b := connect(t, rabbitmq.Options{URL: amqpURL(t), NoDefaultGroup: true})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := "unroutable-" + bus.NewID()
	err := b.Publish(ctx, topic, bus.NewMessage([]byte("nobody listens")), bus.NewMessage([]byte("nor here")))
	var pe *bus.PublishError
	if !errors.Is(err, rabbitmq.ErrUnroutable) || !errors.As(err, &pe) || len(pe.Unconfirmed) != 2 {
		t.Fatalf("Publish with no queue bound = %v, want ErrUnroutable for both messages", err)
	}
	// Once a group exists, the same topic routes.
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "late"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("now routed"))); err != nil {
		t.Fatalf("Publish with a bound queue: %v", err)
	}
}

// A consumer the server cancels — its queue deleted, as when an operator
// removes it or its node leaves the cluster — consumes again: the queue is
// declared anew and new messages arrive.
func TestCancelledConsumerConsumesAgain(t *testing.T) {
	b := connect(t, rabbitmq.Options{URL: amqpURL(t), ReconnectBackoff: 50 * time.Millisecond})
	defer b.Close()
	topic := brokertest.Name(t)
	sub := brokertest.Subscribe(t, b, topic, bus.SubscribeOptions{Group: "g"})
	brokertest.Publish(t, b, topic, bus.NewMessage([]byte("before")))
	brokertest.Ack(t, brokertest.Receive(t, sub, 10*time.Second))

	resetQueue(t, oneNode(t), topic+".g")
	conn, err := amqp.Dial(oneNode(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// The queue comes back with the consumer, bound before it consumes;
	// until then a publish reaches no queue of this group.
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(topic+".g", true, false, false, false, nil)
		if err == nil && q.Consumers > 0 {
			break
		}
		if err != nil {
			if ch, err = conn.Channel(); err != nil { // a failed passive declare closes the channel
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the group's queue was not consumed again after the server cancelled its consumer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	brokertest.Publish(t, b, topic, bus.NewMessage([]byte("after")))
	d := brokertest.Receive(t, sub, 10*time.Second)
	if string(d.Message().Body) != "after" {
		t.Fatalf("received %q, want the message published after the cancel", d.Message().Body)
	}
	brokertest.Ack(t, d)
}
