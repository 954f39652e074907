package rabbitmq

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// A connection that RabbitMQ closes during a publish (here: a header frame
// over frame_max, which Publish itself refuses beforehand) ends send with
// an error. amqp091 closes the channel's returns channel then, which send
// once read in an endless loop.
func TestSendEndsWhenTheConnectionCloses(t *testing.T) {
	b, err := New(context.Background(), Options{URL: brokertest.AMQP(t), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := amqp.Publishing{Headers: amqp.Table{"big": strings.Repeat("x", 200<<10)}, Body: []byte("x")}
	done := make(chan error, 1)
	go func() { done <- b.c.send(ctx, "", brokertest.Name(t), []amqp.Publishing{big}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("send of a frame over frame_max succeeded")
		}
		t.Logf("send: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("send did not return within 30s of a 20s deadline")
	}
}
