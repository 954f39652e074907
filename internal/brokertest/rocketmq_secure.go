package brokertest

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

// The secure RocketMQ instance of scripts/brokers: a name server and a
// broker of their own that take TLS connections only, with the test CA's
// certificate, and whose broker authenticates every request (ACL 2.0)
// with the user of Security: the access key is Security.User, the secret
// key Security.Password. Its URL comes from the environment variable, or
// else from SecurityFile, or else is the default.
const (
	RocketMQSecureEnv        = "OMNIBUS_ROCKETMQ_SECURE_URL"
	DefaultRocketMQSecureURL = "rocketmqs://omnibus@127.0.0.1:9877"
)

// RocketMQSecure returns the rocketmqs:// URL of the secure RocketMQ
// instance, without a password, and the Security that holds the secret
// key and the CA. Without the security settings, or when none of the name
// servers answers, the test is skipped, or fails under CI.
func RocketMQSecure(t testing.TB) (string, Security) {
	t.Helper()
	s := Secure(t)
	raw := env(RocketMQSecureEnv, "")
	if raw == "" {
		if file, err := securityPath(); err == nil {
			if m, err := readEnvFile(file); err == nil {
				raw = m[RocketMQSecureEnv]
			}
		}
	}
	if raw == "" {
		raw = DefaultRocketMQSecureURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "rocketmqs" && u.Scheme != "rocketmq") {
		t.Fatalf("brokertest: %s=%q: want rocketmqs://[user@]host:port[,host:port...]", RocketMQSecureEnv, raw)
	}
	var addrs []string
	for h := range strings.SplitSeq(u.Host, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "9876")
		}
		addrs = append(addrs, h)
	}
	if len(addrs) == 0 {
		t.Fatalf("brokertest: %s=%q names no name server", RocketMQSecureEnv, raw)
	}
	require(t, "rocketmq", RocketMQSecureEnv, addrs, InCI())
	return raw, s
}
