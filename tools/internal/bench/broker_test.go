package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// runOnBroker runs a short closed loop and a short fixed-rate run on a
// real broker through a Runner, and returns the topics it used.
func runOnBroker(t *testing.T, target Target) []string {
	t.Helper()
	var topics []string
	r := &Runner{Target: target, Cleanup: func(ctx context.Context, url, topic, group string) error {
		topics = append(topics, topic)
		return Cleanup(ctx, url, topic, group)
	}}
	ctx := context.Background()
	for _, w := range []Workload{
		{MessageSize: 256, Producers: 2, Consumers: 2, Batch: 20},
		{MessageSize: 256, Producers: 1, Consumers: 1, Batch: 20, Rate: 500},
	} {
		w = quick(w)
		w.Warmup, w.Duration = 300*time.Millisecond, 700*time.Millisecond
		kind := KindMax
		if w.OpenLoop() {
			kind = KindFixed
		}
		res := r.Run(ctx, kind, w, 1)
		if res.Error != "" {
			t.Fatalf("%s: %s", res.ID, res.Error)
		}
		s := res.Samples[0]
		if s.Published == 0 || s.EndToEnd.Count != s.Published || s.Undrained != 0 {
			t.Errorf("%s: published %d, end-to-end samples %d, undrained %d", res.ID, s.Published, s.EndToEnd.Count, s.Undrained)
		}
		for _, n := range res.Notes {
			if strings.HasPrefix(n, "cleanup") {
				t.Errorf("%s: %s", res.ID, n)
			}
		}
		t.Logf("%s: %s", res.ID, sampleLine(s))
	}
	return topics
}

func TestRabbitMQ(t *testing.T) {
	url := brokertest.AMQP(t)
	info := Probe(context.Background(), Target{Name: "rabbitmq", URL: url})
	if info.Product != "RabbitMQ" || info.Version == unknown || info.VersionSource == "" {
		t.Errorf("probe: %+v", info)
	}
	// Test binaries carry no module versions, so only the library's name
	// can be checked here.
	if info.Durability.Settings["queue_type"] != "classic (adapter default)" || info.Client.Library != "github.com/rabbitmq/amqp091-go" {
		t.Errorf("settings %v, client %+v", info.Durability.Settings, info.Client)
	}
	if strings.Contains(info.URL, "guest:guest") {
		t.Errorf("probe kept the password: %s", info.URL)
	}
	topics := runOnBroker(t, Target{Name: "rabbitmq", URL: url})

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, topic := range topics {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclarePassive(topic+"."+Group, true, false, false, false, nil); err == nil {
			t.Errorf("queue %s.%s outlived its run", topic, Group)
			ch.Close()
		}
	}
}

func TestRedis(t *testing.T) {
	url := brokertest.Redis(t)
	info := Probe(context.Background(), Target{Name: "redis", URL: url})
	if info.Product != "Redis" && info.Product != "Valkey" || info.Version == unknown {
		t.Errorf("probe: %+v", info)
	}
	if info.Durability.Settings["appendfsync"] == "" {
		t.Errorf("appendfsync not read: %+v", info)
	}
	topics := runOnBroker(t, Target{Name: "redis", URL: url})
	u, _ := bus.ParseURL(url)
	e, _, err := redisEndpoint(u)
	if err != nil {
		t.Fatal(err)
	}
	c := redisconn.NewClient(e, 5*time.Second, 5*time.Second, 2, 0)
	defer c.Close()
	for _, topic := range topics {
		if n, err := c.Exists(context.Background(), topic).Result(); err != nil || n != 0 {
			t.Errorf("stream %s outlived its run (%d, %v)", topic, n, err)
		}
	}
}

func TestKafka(t *testing.T) {
	addrs := brokertest.Kafka(t)
	url := "kafka://" + strings.Join(addrs, ",")
	info := Probe(context.Background(), Target{Name: "kafka", URL: url})
	if info.Product != "Apache Kafka" || !strings.Contains(info.Version, "inferred") ||
		info.Durability.Settings["min.insync.replicas"] == "" {
		t.Errorf("probe: %+v", info)
	}
	runOnBroker(t, Target{Name: "kafka", URL: url})
	if u, notes := runURL(url, Workload{Partitions: 4}); !strings.Contains(u, "partitions=4") || notes != nil {
		t.Errorf("runURL = %s, %v", u, notes)
	}
	if _, notes := runURL(url+"?partitions=2", Workload{Partitions: 4}); len(notes) != 1 {
		t.Errorf("an overriding URL parameter went unnoted")
	}
}

func TestRocketMQ(t *testing.T) {
	url := brokertest.RocketMQ(t)
	info := Probe(context.Background(), Target{Name: "rocketmq", URL: url})
	if info.Product != "Apache RocketMQ" || info.Version == unknown || info.Durability.Settings["flushDiskType"] == "" {
		t.Errorf("probe: %+v", info)
	}
	t.Logf("probe: %s %s: %s", info.Product, info.Version, info.Durability.Summary)
	runOnBroker(t, Target{Name: "rocketmq", URL: url})
	if u, notes := runURL(url, Workload{Partitions: 4}); !strings.Contains(u, "queues=4") || notes != nil {
		t.Errorf("runURL = %s, %v", u, notes)
	}
	if _, notes := runURL(url+"?queues=2", Workload{Partitions: 4}); len(notes) != 1 {
		t.Errorf("an overriding URL parameter went unnoted")
	}
}
