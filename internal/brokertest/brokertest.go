package brokertest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Environment variables read by the helpers, and their defaults.
const (
	AMQPEnv          = "OMNIBUS_AMQP_URL"
	RedisEnv         = "OMNIBUS_REDIS_URL"
	KafkaEnv         = "OMNIBUS_KAFKA_BROKERS"
	DefaultAMQPURL   = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL  = "redis://127.0.0.1:6379/0"
	DefaultKafkaAddr = "127.0.0.1:9092"
)

// DialTimeout bounds the reachability check of each helper.
const DialTimeout = 2 * time.Second

// InCI reports whether CI is "true" or "1", where an unreachable broker fails
// the test instead of skipping it.
func InCI() bool {
	v := strings.TrimSpace(os.Getenv("CI"))
	return v == "1" || strings.EqualFold(v, "true")
}

// AMQP returns the AMQP 0-9-1 URL of the RabbitMQ to test against.
func AMQP(t testing.TB) string {
	t.Helper()
	u := env(AMQPEnv, DefaultAMQPURL)
	addrs, err := urlAddrs(u, map[string]string{"amqp": "5672", "amqps": "5671"})
	if err != nil {
		t.Fatalf("brokertest: %s: %v", AMQPEnv, err)
	}
	require(t, "rabbitmq", AMQPEnv, addrs, InCI())
	return u
}

// Redis returns the URL of the Redis to test against, in the form
// redis.ParseURL accepts.
func Redis(t testing.TB) string {
	t.Helper()
	u := env(RedisEnv, DefaultRedisURL)
	addrs, err := urlAddrs(u, map[string]string{
		"redis": "6379", "rediss": "6379",
		"redis+cluster": "6379", "rediss+cluster": "6379", "redis+sentinel": "26379", "rediss+sentinel": "26379",
	})
	if err != nil {
		t.Fatalf("brokertest: %s: %v", RedisEnv, err)
	}
	require(t, "redis", RedisEnv, addrs, InCI())
	return u
}

// Kafka returns the bootstrap addresses (host:port) of the Kafka cluster to
// test against. It is enough that one of them answers.
func Kafka(t testing.TB) []string {
	t.Helper()
	addrs, err := splitAddrs(env(KafkaEnv, DefaultKafkaAddr))
	if err != nil {
		t.Fatalf("brokertest: %s: %v", KafkaEnv, err)
	}
	require(t, "kafka", KafkaEnv, addrs, InCI())
	return addrs
}

// Name returns a queue, stream or topic name that no other test or run uses:
// "omnibus-" plus the test's name, made safe for every broker, plus 8 random
// hex digits. It fits Kafka's topic alphabet ([a-zA-Z0-9._-]) and length.
func Name(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 180 {
		base = base[:180]
	}
	var buf [4]byte
	if _, err := rand.Read(buf[:]); err != nil {
		t.Fatalf("brokertest: random name: %v", err)
	}
	return "omnibus-" + base + "-" + hex.EncodeToString(buf[:])
}

func env(key, def string) string {
	if v := strings.TrimSpace(os.Getenv(key)); v != "" {
		return v
	}
	return def
}

// require dials addrs and returns once one answers. Otherwise it fails the
// test under CI and skips it elsewhere.
func require(t testing.TB, broker, envVar string, addrs []string, ci bool) {
	t.Helper()
	if err := CheckRoutes(addrs...); err != nil {
		t.Fatalf("brokertest: %s (%s): %v", broker, envVar, err)
	}
	var errs []error
	for _, addr := range addrs {
		conn, err := net.DialTimeout("tcp", addr, DialTimeout)
		if err == nil {
			conn.Close()
			return
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if ci {
		t.Fatalf("brokertest: %s not reachable at %s (%s): %v\n"+
			"under CI a broker test fails instead of skipping; start it with: make up (scripts/brokers up %s)",
			broker, strings.Join(addrs, ","), envVar, err, broker)
		return
	}
	t.Skipf("brokertest: %s not reachable at %s (%s): %v\n"+
		"start it with: make up (scripts/brokers up %s), or point %s at one",
		broker, strings.Join(addrs, ","), envVar, err, broker, envVar)
}

// urlAddr returns host:port of a broker URL, with the scheme's default port.
func urlAddr(raw string, defaultPorts map[string]string) (string, error) {
	addrs, err := urlAddrs(raw, defaultPorts)
	if err != nil {
		return "", err
	}
	if len(addrs) != 1 {
		return "", fmt.Errorf("%q: want one host, got %d", raw, len(addrs))
	}
	return addrs[0], nil
}

// urlAddrs returns the host:port addresses of a broker URL whose host may
// be a comma-separated list, with the scheme's default port.
func urlAddrs(raw string, defaultPorts map[string]string) ([]string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	port, ok := defaultPorts[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("%q: unsupported scheme %q", raw, u.Scheme)
	}
	var addrs []string
	for h := range strings.SplitSeq(u.Host, ",") {
		host, p, err := net.SplitHostPort(h)
		if err != nil {
			host, p = strings.Trim(h, "[]"), ""
		}
		if host == "" {
			host = "127.0.0.1"
		}
		if p == "" {
			p = port
		}
		addrs = append(addrs, net.JoinHostPort(host, p))
	}
	return addrs, nil
}

func splitAddrs(list string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%q: %w", a, err)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%q lists no address", list)
	}
	return addrs, nil
}

// CheckRoutes returns an error unless every address in 10.0.0.0/8 among
// addrs (host:port) is reached over a veth of scripts/clusters ("omb-..."),
// on a directly connected subnet: such addresses live only inside the
// network namespaces of scripts/clusters, and from any other network stack
// (the host's) a packet to them would leave the machine by the default
// route. Other addresses are not checked.
func CheckRoutes(addrs ...string) error {
	_, private, _ := net.ParseCIDR("10.0.0.0/8")
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		ip := net.ParseIP(host)
		if ip == nil || !private.Contains(ip) {
			continue
		}
		out, err := exec.Command("ip", "route", "get", ip.String()).CombinedOutput()
		route := strings.TrimSpace(string(out))
		if err != nil {
			return fmt.Errorf("no route to %s (%v: %s): run the test inside the client namespace (scripts/clusters exec)", ip, err, route)
		}
		if !strings.Contains(route, " dev omb-") || strings.Contains(route, " via ") {
			return fmt.Errorf("%s would be reached by %q, not over a scripts/clusters veth: refusing to send traffic off this machine; run the test inside the client namespace (scripts/clusters exec)", ip, route)
		}
	}
	return nil
}
