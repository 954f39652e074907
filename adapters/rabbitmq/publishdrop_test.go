package rabbitmq_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
)

// TestPublishReturnsWhenTheConnectionDropsMidPublish drops the connection
// while publishers keep batches in flight: every Publish must return (an
// error or success) within its context, never hang on the lost channel.
func TestPublishReturnsWhenTheConnectionDropsMidPublish(t *testing.T) {
	amqp := amqpURL(t)
	name := "omnibus-publishdrop-" + bus.NewID()
	b := connect(t, rabbitmq.Options{URL: amqp, ConnectionName: name, ReconnectBackoff: 50 * time.Millisecond})
	defer b.Close()
	topic := "publishdrop-" + bus.NewID()

	const publishers = 4
	const limit = 5 * time.Second // each Publish's context
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		hung     atomic.Int64
		attempts atomic.Int64
	)
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				msgs := make([]*bus.Message, 20)
				for i := range msgs {
					msgs[i] = bus.NewMessage([]byte("batch"))
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					ctx, cancel := context.WithTimeout(context.Background(), limit)
					defer cancel()
					_ = b.Publish(ctx, topic, msgs...)
				}()
				attempts.Add(1)
				select {
				case <-done:
				case <-time.After(limit + 10*time.Second):
					hung.Add(1)
					return
				}
			}
		}()
	}

	deadline := time.Now().Add(20 * time.Second)
	dropped := 0
	for dropped < 3 && time.Now().Before(deadline) {
		if dropConnections(t, name) > 0 {
			dropped++
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	if dropped == 0 {
		t.Fatal("the connection never appeared in the management API")
	}
	if n := hung.Load(); n > 0 {
		t.Fatalf("%d of %d Publish calls did not return within %v of their context's deadline after the connection was dropped", n, attempts.Load(), 10*time.Second)
	}
}
