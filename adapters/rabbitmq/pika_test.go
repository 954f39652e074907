package rabbitmq_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// python returns the interpreter of the virtual environment `make venv`
// creates, which has pika installed.
func python(t *testing.T) string {
	t.Helper()
	p := os.Getenv("OMNIBUS_PYTHON")
	if p == "" {
		if root, err := brokertest.RepoRoot(); err == nil {
			p = filepath.Join(root, ".venv", "bin", "python")
		}
	}
	if err := exec.Command(p, "-c", "import pika").Run(); err != nil {
		if brokertest.InCI() {
			t.Fatalf("python with pika (%s): %v; run: make venv", p, err)
		}
		t.Skipf("python with pika not found at %s (%v); run: make venv", p, err)
	}
	return p
}

// resetQueue deletes the queue so the test starts as a fresh deployment.
func resetQueue(t *testing.T, url, queue string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
}

// TestPikaInterop shares the plain queue "zhuozi" with the classic pika
// producer and consumer: pika declares it (non-durable, as in the
// tutorial), and omnibus uses it as it is.
func TestPikaInterop(t *testing.T) {
	url := oneNode(t)
	py := python(t)
	const queue = "zhuozi"
	resetQueue(t, url, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// pika -> omnibus
	produce := exec.CommandContext(ctx, py, "testdata/pika_peer.py", "produce", url, queue, "hello from pika", "second")
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("pika producer: %v\n%s", err, out)
	}
	b, err := bus.Open(ctx, url+"?topology=queue")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe(ctx, queue, bus.SubscribeOptions{Prefetch: 2})
	if err != nil {
		t.Fatalf("omnibus consumer on pika's queue: %v", err)
	}
	for _, want := range []string{"hello from pika", "second"} {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(d.Message().Body); got != want {
			t.Fatalf("omnibus received %q, want %q", got, want)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sub.Close()

	// omnibus -> pika
	consume := exec.CommandContext(ctx, py, "testdata/pika_peer.py", "consume", url, queue, "1")
	stdout, _ := consume.StdoutPipe()
	consume.Stderr = os.Stderr
	if err := consume.Start(); err != nil {
		t.Fatal(err)
	}
	m := bus.NewMessage([]byte("hello from omnibus"))
	m.Headers[bus.HeaderCorrelationID] = "req-7"
	if err := b.Publish(ctx, queue, m); err != nil {
		t.Fatalf("omnibus publish to pika's queue: %v", err)
	}
	var got struct {
		Body      string            `json:"body"`
		MessageID string            `json:"message_id"`
		Headers   map[string]string `json:"headers"`
	}
	line := bufio.NewScanner(stdout)
	if !line.Scan() {
		consume.Wait()
		t.Fatal("pika consumer printed nothing")
	}
	if err := json.Unmarshal(line.Bytes(), &got); err != nil {
		t.Fatalf("pika consumer output %q: %v", line.Text(), err)
	}
	if err := consume.Wait(); err != nil {
		t.Fatalf("pika consumer: %v", err)
	}
	if got.Body != "hello from omnibus" || got.MessageID != m.ID || got.Headers[bus.HeaderCorrelationID] != "req-7" {
		t.Fatalf("pika received %+v, want body, message id %s and the correlation header", got, m.ID)
	}
}
