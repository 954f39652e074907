package brokertest

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

// RocketMQ's environment variable and default: the URL of the name
// servers, as adapters/rocketmq takes it.
const (
	RocketMQEnv        = "OMNIBUS_ROCKETMQ_URL"
	DefaultRocketMQURL = "rocketmq://127.0.0.1:9876"
)

// RocketMQ returns the rocketmq:// URL of the RocketMQ name servers to
// test against. It is enough that one of them answers; under CI an
// unreachable one fails the test, elsewhere it skips it.
func RocketMQ(t testing.TB) string {
	t.Helper()
	raw := env(RocketMQEnv, DefaultRocketMQURL)
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "rocketmq" {
		t.Fatalf("brokertest: %s=%q: want rocketmq://host:port[,host:port...]", RocketMQEnv, raw)
	}
	var addrs []string
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "9876")
		}
		addrs = append(addrs, h)
	}
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:9876"}
	}
	require(t, "rocketmq", RocketMQEnv, addrs, InCI())
	return raw
}
