package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
)

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
