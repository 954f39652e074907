package kombu_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/adapters/kombu"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// kombuURL returns the kombu+redis:// URL of the test server with a key
// prefix of its own, so that the test's unacked hash is not shared.
func kombuURL(t testing.TB, params string) string {
	t.Helper()
	u, err := url.Parse(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	switch u.Scheme {
	case "rediss":
		u.Scheme = kombu.SchemeTLS
	case "redis+sentinel":
		u.Scheme = kombu.SchemeSentinel
	default:
		u.Scheme = kombu.Scheme
	}
	prefix := brokertest.Name(t) + ":"
	t.Cleanup(func() { cleanPrefix(t, prefix) })
	q := url.Values{"global_keyprefix": {prefix}}
	u.RawQuery = q.Encode()
	if params != "" {
		u.RawQuery += "&" + params
	}
	return u.String()
}

// cleanPrefix deletes every key under prefix.
func cleanPrefix(t testing.TB, prefix string) {
	rdb := testClient(t)
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

// testClient returns a client of the test server, OMNIBUS_REDIS_URL (a
// standalone server or a master behind Sentinel).
func testClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.Open(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	return rdb
}

func open(t testing.TB, raw string) *kombu.Broker {
	t.Helper()
	b, err := bus.Open(context.Background(), raw)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b.(*kombu.Broker)
}

func TestConformance(t *testing.T) {
	raw := kombuURL(t, "max_message_size=65536&visibility_timeout=5s&unacked_restore_interval=200ms&poll_interval=200ms")
	probe := open(t, raw)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := bus.Open(context.Background(), raw)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return b
		},
		Features:    probe.Features(),
		TopicPrefix: "omnibus-test",
		KnownFailures: map[string]string{
			"GroupsFanOut": "a kombu queue is one Redis list that every consumer pops, so groups compete " +
				"rather than each receiving every message (kombu fans out only over fanout exchanges, on PUB/SUB, which keeps nothing)",
		},
	})
}

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("kombu+rediss://bob:s3cret@redis.example:6390/2?global_keyprefix=app:&visibility_timeout=90&unacked_restore_interval=2s&poll_interval=250ms&max_message_size=4096")
	o, err := kombu.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if o.Addr != "redis.example:6390" || o.Username != "bob" || o.Password != "s3cret" || o.DB != 2 || o.TLS == nil ||
		o.KeyPrefix != "app:" || o.VisibilityTimeout != 90*time.Second || o.RestoreInterval != 2*time.Second ||
		o.PollInterval != 250*time.Millisecond || o.MaxMessageSize != 4096 {
		t.Fatalf("ParseURL = %+v", o)
	}
	bad, _ := url.Parse("kombu+redis://u:hunter2@h/x?visibility_timeout=-1&nope=1")
	_, err = kombu.ParseURL(bad)
	if !errors.Is(err, bus.ErrBadURL) || !errors.Is(err, bus.ErrBadConfig) {
		t.Fatalf("bad URL: %v, want ErrBadURL and ErrBadConfig", err)
	}
	for _, want := range []string{"path", "visibility_timeout", "nope"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q contains the password", err)
	}

	for raw, want := range map[string]kombu.Options{
		"kombu+sentinel://:pw@s1:26379,s2:6379/mymaster/3?sentinel_password=spw": {
			MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:6379"}, Password: "pw", DB: 3, SentinelPassword: "spw"},
		"kombu+sentinel://s1?master_name=other": {MasterName: "other", SentinelAddrs: []string{"s1:26379"}},
	} {
		u, _ := url.Parse(raw)
		o, err := kombu.ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", raw, err)
			continue
		}
		if o.MasterName != want.MasterName || strings.Join(o.SentinelAddrs, " ") != strings.Join(want.SentinelAddrs, " ") ||
			o.Password != want.Password || o.DB != want.DB || o.SentinelPassword != want.SentinelPassword || o.Addr != "" {
			t.Errorf("ParseURL(%q) = %+v, want %+v", raw, o, want)
		}
	}
	for _, raw := range []string{"kombu+sentinel://s1:26379", "kombu+redis+cluster://h1,h2", "kombu+redis://h1,h2/0"} {
		u, _ := url.Parse(raw)
		if _, err := kombu.ParseURL(u); !errors.Is(err, bus.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", raw, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	_, err := bus.Open(context.Background(), "kombu+redis://127.0.0.1:1/0?dial_timeout=300ms")
	if !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("Open of a closed port: %v, want ErrUnreachable", err)
	}
}

// TestLayout checks what a Go consumer leaves in Redis, in kombu's
// format: while a delivery is unsettled it is in the unacked hash as
// [message, exchange, routing_key] and in the unacked index, and no
// longer in the queue; Ack removes both.
func TestLayout(t *testing.T) {
	raw := kombuURL(t, "")
	b := open(t, raw)
	prefix, _ := url.Parse(raw)
	p := prefix.Query().Get("global_keyprefix")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := b.Client()

	m := bus.NewMessage([]byte(`{"x":1}`))
	m.Headers["content-type"] = "application/json"
	if err := b.Publish(ctx, "jobs", m); err != nil {
		t.Fatal(err)
	}
	items, err := rdb.LRange(ctx, p+"jobs", 0, -1).Result()
	if err != nil || len(items) != 1 {
		t.Fatalf("queue list: %v %v", items, err)
	}
	var env struct {
		Body        string            `json:"body"`
		ContentType string            `json:"content-type"`
		Headers     map[string]any    `json:"headers"`
		Properties  map[string]any    `json:"properties"`
		Info        map[string]string `json:"-"`
	}
	if err := json.Unmarshal([]byte(items[0]), &env); err != nil {
		t.Fatal(err)
	}
	tag, _ := env.Properties["delivery_tag"].(string)
	info, _ := env.Properties["delivery_info"].(map[string]any)
	if env.Body != "eyJ4IjoxfQ==" || env.ContentType != "application/json" || env.Properties["body_encoding"] != "base64" ||
		tag == "" || info["exchange"] != "" || info["routing_key"] != "jobs" {
		t.Fatalf("envelope %s", items[0])
	}

	sub, err := b.Subscribe(ctx, "jobs", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().ID != m.ID || string(d.Message().Body) != `{"x":1}` {
		t.Fatalf("received %+v", d.Message())
	}
	if n := rdb.LLen(ctx, p+"jobs").Val(); n != 0 {
		t.Errorf("the queue still has %d messages after the take", n)
	}
	entry, err := rdb.HGet(ctx, p+"unacked", tag).Result()
	if err != nil {
		t.Fatalf("unacked[%s]: %v", tag, err)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal([]byte(entry), &parts); err != nil || len(parts) != 3 ||
		string(parts[0]) != items[0] || string(parts[1]) != `""` || string(parts[2]) != `"jobs"` {
		t.Fatalf("unacked entry %s, want [message, \"\", \"jobs\"]", entry)
	}
	score, err := rdb.ZScore(ctx, p+"unacked_index", tag).Result()
	if err != nil || time.Since(time.UnixMicro(int64(score*1e6))).Abs() > 5*time.Second {
		t.Fatalf("unacked_index score %v %v, want about now", score, err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if rdb.HExists(ctx, p+"unacked", tag).Val() || rdb.ZScore(ctx, p+"unacked_index", tag).Err() == nil {
		t.Fatal("Ack left the delivery in the unacked hash or index")
	}
}

// TestPriorityQueues: messages in kombu's priority sub-queues (queue name,
// separator \x06\x16, step) are taken, in kombu's order.
func TestPriorityQueues(t *testing.T) {
	raw := kombuURL(t, "poll_interval=100ms")
	b := open(t, raw)
	u, _ := url.Parse(raw)
	p := u.Query().Get("global_keyprefix")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, "prio", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	env := func(body string, pri int) string {
		return fmt.Sprintf(`{"body": %q, "content-encoding": "utf-8", "content-type": "text/plain", "headers": {},
 "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "prio"}, "priority": %d,
 "body_encoding": "utf-8", "delivery_tag": "tag-%s"}}`, body, pri, body)
	}
	rdb := b.Client()
	// Both appear at once (MULTI/EXEC): the subscription already polls,
	// and would take "six" if it were alone for a moment.
	if _, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.LPush(ctx, p+"prio\x06\x166", env("six", 6))
		pipe.LPush(ctx, p+"prio\x06\x163", env("three", 4))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	receive := func() bus.Delivery {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := receive()
	if string(d.Message().Body) != "three" || d.Message().ID != "tag-three" {
		t.Fatalf("received %q (ID %q) first, want three (ID its delivery tag), of the higher priority", d.Message().Body, d.Message().ID)
	}
	// A Nack puts it back on the list of its priority, so it comes next.
	if err := d.Nack(ctx, bus.NackOptions{}); err != nil {
		t.Fatal(err)
	}
	d = receive()
	if string(d.Message().Body) != "three" || d.Message().Attempt != 2 {
		t.Fatalf("received %q attempt %d after the Nack, want three on attempt 2", d.Message().Body, d.Message().Attempt)
	}
	ack := func(d bus.Delivery) {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ack(d)
	d = receive()
	if string(d.Message().Body) != "six" || d.Message().Attempt != 1 {
		t.Fatalf("received %q attempt %d, want six on attempt 1", d.Message().Body, d.Message().Attempt)
	}
	ack(d)
	if n := rdb.LLen(ctx, p+"prio\x06\x163").Val() + rdb.LLen(ctx, p+"prio\x06\x166").Val(); n != 0 {
		t.Fatalf("%d messages left in the priority lists", n)
	}
}

// TestUnackedRestoredAfterVisibilityTimeout: a delivery its consumer
// neither settles nor renews (the consumer is gone) is put back in its
// queue once the visibility timeout has passed, and delivered again.
func TestUnackedRestoredAfterVisibilityTimeout(t *testing.T) {
	raw := kombuURL(t, "visibility_timeout=1s&unacked_restore_interval=100ms&poll_interval=100ms")
	b := open(t, raw)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m := bus.NewMessage([]byte("survive me"))
	if err := b.Publish(ctx, "crashy", m); err != nil {
		t.Fatal(err)
	}
	// A consumer in another process takes the message and is killed
	// before it acknowledges it.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperTakeAndHang$", "-test.v")
	cmd.Env = append(os.Environ(), "KOMBU_HELPER_URL="+raw, "KOMBU_HELPER_QUEUE=crashy")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 0, 128)
	buf := make([]byte, 1)
	for !strings.Contains(string(line), "taken ") {
		if _, err := stdout.Read(buf); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper ended before it took the message: %v (%s)", err, line)
		}
		line = append(line, buf...)
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed := time.Now()

	u, _ := url.Parse(raw)
	p := u.Query().Get("global_keyprefix")
	if n := b.Client().HLen(ctx, p+"unacked").Val(); n != 1 {
		t.Fatalf("unacked hash has %d entries after the consumer died, want 1", n)
	}
	sub, err := b.Subscribe(ctx, "crashy", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().ID != m.ID || string(d.Message().Body) != "survive me" || d.Message().Attempt != 2 {
		t.Fatalf("redelivered %+v, want the message on attempt 2", d.Message())
	}
	if waited := time.Since(killed); waited < 500*time.Millisecond {
		t.Errorf("redelivered %v after the consumer died, before the visibility timeout", waited)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.Client().HLen(ctx, p+"unacked").Val(); n != 0 {
		t.Fatalf("unacked hash has %d entries after the Ack, want 0", n)
	}
}

// TestHelperTakeAndHang is the consumer process that
// TestUnackedRestoredAfterVisibilityTimeout kills.
func TestHelperTakeAndHang(t *testing.T) {
	raw := os.Getenv("KOMBU_HELPER_URL")
	if raw == "" {
		t.Skip("helper process of TestUnackedRestoredAfterVisibilityTimeout")
	}
	b, err := bus.Open(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(context.Background(), os.Getenv("KOMBU_HELPER_QUEUE"), bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("taken %s\n", d.Message().ID)
	time.Sleep(time.Minute)
}

// TestAckAfterRestore: settling a delivery that a restore already put
// back reports ErrRestored.
func TestAckAfterRestore(t *testing.T) {
	raw := kombuURL(t, "visibility_timeout=300ms&unacked_restore_interval=50ms&poll_interval=50ms")
	b := open(t, raw)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Publish(ctx, "late", bus.NewMessage([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "late", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another broker's restore, with the index entry aged by hand as a
	// dead consumer's would be.
	u, _ := url.Parse(raw)
	p := u.Query().Get("global_keyprefix")
	tags := b.Client().ZRange(ctx, p+"unacked_index", 0, -1).Val()
	if len(tags) != 1 {
		t.Fatalf("unacked index %v", tags)
	}
	b.Client().ZAdd(ctx, p+"unacked_index", redis.Z{Score: 1, Member: tags[0]})
	other := open(t, raw)
	if n, err := other.Restore(ctx); err != nil || n != 1 {
		t.Fatalf("Restore = %d, %v, want 1", n, err)
	}
	if err := d.Ack(ctx); !errors.Is(err, kombu.ErrRestored) {
		t.Fatalf("Ack after a restore: %v, want ErrRestored", err)
	}
}

// TestMalformedEntriesDeadLettered: queue entries that are not kombu
// envelopes go to the dead-letter queue with ErrMalformed's text and are
// never handed to Receive; the unacked hash keeps nothing of them.
func TestMalformedEntriesDeadLettered(t *testing.T) {
	raw := kombuURL(t, "poll_interval=100ms")
	b := open(t, raw)
	u, _ := url.Parse(raw)
	p := u.Query().Get("global_keyprefix")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := b.Client()
	rdb.LPush(ctx, p+"mixed", "not json at all", `{"body": "eA==", "properties": {"body_encoding": "base64"}}`)
	good := bus.NewMessage([]byte("fine"))
	if err := b.Publish(ctx, "mixed", good); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "mixed", bus.SubscribeOptions{Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().ID != good.ID {
		t.Fatalf("Receive returned %q, want only the well-formed message", d.Message().Body)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	dlq, err := b.Subscribe(ctx, "mixed.dlq", bus.SubscribeOptions{Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	bodies := map[string]bool{}
	for range 2 {
		d, err := dlq.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h := d.Message().Headers.Get(bus.HeaderError); !strings.Contains(h, kombu.ErrMalformed.Error()) {
			t.Errorf("dead letter error header %q, want it to name %v", h, kombu.ErrMalformed)
		}
		bodies[string(d.Message().Body)] = true
		d.Ack(ctx)
	}
	if !bodies["not json at all"] || len(bodies) != 2 {
		t.Errorf("dead letters %v, want both malformed entries as they were", bodies)
	}
	if n := rdb.HLen(ctx, p+"unacked").Val(); n != 0 {
		t.Errorf("unacked hash holds %d entries, want 0", n)
	}
}

// TestRestoreThroughBinding: an unacked entry published through a named
// exchange goes back to the queue that kombu's binding table binds to
// that exchange with its routing key, on the list of its priority.
func TestRestoreThroughBinding(t *testing.T) {
	raw := kombuURL(t, "")
	b := open(t, raw)
	u, _ := url.Parse(raw)
	p := u.Query().Get("global_keyprefix")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := b.Client()
	rdb.SAdd(ctx, p+"_kombu.binding.tasks", "sms\x06\x16\x06\x16sms-queue", "mail\x06\x16\x06\x16mail-queue")
	msg := `{"body": "aGk=", "content-encoding": "utf-8", "content-type": "text/plain", "headers": {},
 "properties": {"delivery_info": {"exchange": "tasks", "routing_key": "sms"}, "priority": 6,
 "body_encoding": "base64", "delivery_tag": "tag-1"}}`
	rdb.HSet(ctx, p+"unacked", "tag-1", `[`+msg+`, "tasks", "sms"]`)
	rdb.ZAdd(ctx, p+"unacked_index", redis.Z{Score: 1, Member: "tag-1"})
	if n, err := b.Restore(ctx); err != nil || n != 1 {
		t.Fatalf("Restore = %d, %v, want 1", n, err)
	}
	items := rdb.LRange(ctx, p+"sms-queue\x06\x166", 0, -1).Val()
	if len(items) != 1 || rdb.Exists(ctx, p+"mail-queue", p+"sms-queue").Val() != 0 {
		t.Fatalf("priority list of sms-queue holds %v, want the restored message alone", items)
	}
	var e struct {
		Properties struct {
			DeliveryInfo struct {
				Redelivered bool `json:"redelivered"`
			} `json:"delivery_info"`
			Attempt int `json:"omnibus-attempt"`
		} `json:"properties"`
	}
	if err := json.Unmarshal([]byte(items[0]), &e); err != nil || !e.Properties.DeliveryInfo.Redelivered || e.Properties.Attempt != 2 {
		t.Fatalf("restored %s (%v), want redelivered with omnibus-attempt 2", items[0], err)
	}
	if rdb.HLen(ctx, p+"unacked").Val() != 0 || rdb.ZCard(ctx, p+"unacked_index").Val() != 0 {
		t.Fatal("Restore left the entry in the unacked hash or index")
	}
	// Held by someone else's restore: nothing happens.
	rdb.Set(ctx, p+"unacked_mutex", "other", time.Minute)
	rdb.HSet(ctx, p+"unacked", "tag-2", `[`+msg+`, "tasks", "sms"]`)
	rdb.ZAdd(ctx, p+"unacked_index", redis.Z{Score: 1, Member: "tag-2"})
	if n, err := b.Restore(ctx); err != nil || n != 0 {
		t.Fatalf("Restore under another's mutex = %d, %v, want 0", n, err)
	}
	if rdb.Get(ctx, p+"unacked_mutex").Val() != "other" {
		t.Fatal("Restore released a mutex it did not hold")
	}
}
