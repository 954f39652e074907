package brokers_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// Each smoke test is one raw-client round trip on a fresh queue, stream or
// topic, bounded by a context so that a hung broker fails the test quickly.

func TestRabbitMQRoundTrip(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := brokertest.Name(t)
	// Exclusive: the broker deletes the queue when this connection closes.
	if _, err := ch.QueueDeclare(queue, false, false, true, false, nil); err != nil {
		t.Fatalf("declare %s: %v", queue, err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}

	body := []byte("smoke " + queue)
	confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
		amqp.Publishing{ContentType: "text/plain", Body: body})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if acked, err := confirm.WaitContext(ctx); err != nil || !acked {
		t.Fatalf("publisher confirm: acked=%v err=%v", acked, err)
	}

	deliveries, err := ch.ConsumeWithContext(ctx, queue, "smoke", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	select {
	case d, ok := <-deliveries:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		if string(d.Body) != string(body) {
			t.Fatalf("body = %q, want %q", d.Body, body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("no delivery: %v", ctx.Err())
	}

	// Closing the channel requeues unacknowledged messages, so an empty
	// queue afterwards shows the ack reached the broker.
	if err := ch.Close(); err != nil {
		t.Fatalf("close channel: %v", err)
	}
	ch2, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch2.Get(queue, false); err != nil || ok {
		t.Fatalf("after ack, get found a message=%v err=%v; want an empty queue", ok, err)
	}
}

func TestRedisStreamRoundTrip(t *testing.T) {
	opt, err := redis.ParseURL(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream, group := brokertest.Name(t), "smoke"
	t.Cleanup(func() { rdb.Del(context.Background(), stream) })
	if err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err(); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
	body := "smoke " + stream
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"body": body}}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}

	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: 1, Block: 5 * time.Second,
	}).Result()
	if err != nil {
		t.Fatalf("XREADGROUP: %v", err)
	}
	if len(res) != 1 || len(res[0].Messages) != 1 {
		t.Fatalf("XREADGROUP returned %+v, want one message", res)
	}
	msg := res[0].Messages[0]
	if msg.ID != id || msg.Values["body"] != body {
		t.Fatalf("read %s %v, want %s body=%q", msg.ID, msg.Values, id, body)
	}

	if n, err := rdb.XAck(ctx, stream, group, id).Result(); err != nil || n != 1 {
		t.Fatalf("XACK = %d, %v; want 1", n, err)
	}
	pending, err := rdb.XPending(ctx, stream, group).Result()
	if err != nil {
		t.Fatalf("XPENDING: %v", err)
	}
	if pending.Count != 0 {
		t.Fatalf("%d messages still pending after XACK", pending.Count)
	}
}

// TestKafkaRoundTrip also checks kafka-go's consumer group protocol against
// the broker: its group code sends fixed, old request versions (FindCoordinator
// v0, SyncGroup v0, OffsetFetch v1, OffsetCommit v2) that Kafka 4 may refuse.
func TestKafkaRoundTrip(t *testing.T) {
	brokers := brokertest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	topic := brokertest.Name(t)
	created, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	})
	if err == nil {
		err = created.Errors[topic]
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil {
			t.Logf("delete topic %s: %v", topic, err)
		}
	})

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
	}
	body := []byte("smoke " + topic)
	// The writer retries while the new topic's leader is being elected.
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: body}); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer: %v", err)
	}

	group := brokertest.Name(t)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		GroupID:     group,
		Topic:       topic,
		StartOffset: kafka.FirstOffset,
		MaxWait:     250 * time.Millisecond,
		// Logged, not fatal: the first group on a fresh broker sees
		// "Group Coordinator Not Available" while __consumer_offsets is made.
		ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) { t.Logf("kafka reader: "+format, args...) }),
	})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("fetch in group %s: %v", group, err)
	}
	if string(m.Value) != string(body) {
		t.Fatalf("value = %q, want %q", m.Value, body)
	}
	if err := r.CommitMessages(ctx, m); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("close reader (leave group): %v", err)
	}

	offsets, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	if parts := offsets.Topics[topic]; len(parts) != 1 || parts[0].CommittedOffset != m.Offset+1 {
		t.Fatalf("committed offsets %+v, want offset %d", parts, m.Offset+1)
	}
}
