// Command quickstart publishes a few messages and consumes them with a
// retrying, concurrent consumer. It runs on the in-process broker by default
// and on any other backend by URL:
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -broker amqp://guest:guest@127.0.0.1:5672/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"time"

	_ "github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

func main() {
	url := flag.String("broker", "mem://", "broker URL")
	n := flag.Int("n", 10, "messages to send")
	flag.Parse()
	if err := run(*url, *n); err != nil {
		log.Fatal(err)
	}
}

func run(url string, n int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	b, err := bus.Open(ctx, url)
	if err != nil {
		return err
	}
	defer b.Close()

	const topic = "greetings"
	var handled atomic.Int64
	done := make(chan struct{})
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{
		Topic:       topic,
		Concurrency: 4,
		Backoff:     bus.ExponentialBackoff(50*time.Millisecond, time.Second),
	}, func(ctx context.Context, m *bus.Message) error {
		// The first delivery of every third message fails, to show retries.
		if seq, _ := strconv.Atoi(m.Headers.Get("seq")); seq%3 == 0 && m.Attempt == 1 {
			return errors.New("flaky downstream")
		}
		fmt.Printf("handled %-10s attempt=%d id=%s\n", m.Body, m.Attempt, m.ID)
		if handled.Add(1) == int64(n) {
			close(done)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(cctx) }()

	msgs := make([]*bus.Message, n)
	for i := range msgs {
		msgs[i] = bus.NewMessage(fmt.Appendf(nil, "hello #%d", i))
		msgs[i].Headers["seq"] = fmt.Sprint(i)
	}
	start := time.Now()
	if err := b.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	fmt.Printf("published %d messages to %s in %v\n", n, topic, time.Since(start).Round(time.Microsecond))

	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("only %d of %d messages handled in 30s", handled.Load(), n)
	}
	cancel()
	if err := <-stopped; err != nil {
		return err
	}
	fmt.Printf("all %d messages handled in %v\n", handled.Load(), time.Since(start).Round(time.Millisecond))
	return nil
}
