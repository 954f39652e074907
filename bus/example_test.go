package bus_test

import (
	"context"
	"fmt"
	"log"

	_ "github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

// A producer publishes; a consumer with four handlers in flight processes
// the messages. Changing the URL moves the same code to another broker.
func Example() {
	ctx := context.Background()
	b, err := bus.Open(ctx, "mem://example")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	done := make(chan string)
	c, err := bus.NewConsumer(b, bus.ConsumerConfig{Topic: "sms.send", Concurrency: 4},
		func(ctx context.Context, m *bus.Message) error {
			done <- string(m.Body)
			return nil // acknowledged
		})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	go c.Run(runCtx)

	if err := b.Publish(ctx, "sms.send", bus.NewMessage([]byte("+15550100"))); err != nil {
		log.Fatal(err)
	}
	fmt.Println("sent to", <-done)
	stop()
	c.Shutdown(ctx) // waits for Run to return
	// Output: sent to +15550100
}
