package rocketmq_test

import (
	"net/url"
	"testing"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func options(t testing.TB) rocketmq.Options {
	t.Helper()
	u, err := url.Parse(brokertest.RocketMQ(t))
	if err != nil {
		t.Fatal(err)
	}
	o, err := rocketmq.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
