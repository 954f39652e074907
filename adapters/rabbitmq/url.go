package rabbitmq

import (
	"context"
	"net/url"

	"github.com/omnibus-mq/omnibus/bus"
)

func init() {
	bus.Register("amqp", open)
	bus.Register("amqps", open)
}

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, opts)
}
