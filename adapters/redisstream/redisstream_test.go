package redisstream_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/bustest"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// redisURL returns the URL of the Redis server the tests use
// (OMNIBUS_REDIS_URL). Under CI an unreachable server fails the test;
// elsewhere it skips it.
func redisURL(t testing.TB) string {
	t.Helper()
	return brokertest.Redis(t)
}

func querySep(raw string) string {
	u, err := url.Parse(raw)
	if err == nil && u.RawQuery != "" {
		return "&"
	}
	return "?"
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// options returns the Options of the test server's URL.
func options(t testing.TB) redisstream.Options {
	t.Helper()
	u, err := url.Parse(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	o, err := redisstream.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func newBroker(t testing.TB, o redisstream.Options) *redisstream.Broker {
	t.Helper()
	b, err := redisstream.New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	o := options(t)
	o.MaxMessageSize = 256 << 10
	o.ClaimInterval = 200 * time.Millisecond
	probe := newBroker(t, o)
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := redisstream.New(context.Background(), o)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return b
		},
		Features:       probe.Features(),
		RedeliveryWait: o.ClaimInterval,
		TopicPrefix:    "omnibus-test",
	})
}

func TestConformanceThroughURL(t *testing.T) {
	raw := redisURL(t) + querySep(redisURL(t)) + "max_message_size=65536&claim_interval=200ms&visibility_timeout=10s"
	probe, err := bus.Open(context.Background(), raw)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	features := probe.(bus.FeatureReporter).Features()
	probe.Close()
	if features.MaxMessageSize != 65536 {
		t.Fatalf("Features().MaxMessageSize = %d, want the URL's 65536", features.MaxMessageSize)
	}
	bustest.Run(t, bustest.Config{
		Connect: func(t testing.TB) bus.Broker {
			b, err := bus.Open(context.Background(), raw)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return b
		},
		Features:       features,
		RedeliveryWait: 200 * time.Millisecond,
		TopicPrefix:    "omnibus-test-url",
	})
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want redisstream.Options
	}{
		{"redis://", redisstream.Options{}},
		{"redis://cache.internal", redisstream.Options{Addr: "cache.internal:6379"}},
		{"redis://:pw@h:7000/3", redisstream.Options{Addr: "h:7000", Password: "pw", DB: 3}},
		{"redis://app:pw@[::1]:6380/", redisstream.Options{Addr: "[::1]:6380", Username: "app", Password: "pw"}},
		{"redis://h?visibility_timeout=1m&claim_interval=250ms&trim_interval=1h&max_message_size=4096&dial_timeout=2s&read_timeout=3s&pool_size=7",
			redisstream.Options{Addr: "h:6379", VisibilityTimeout: time.Minute, ClaimInterval: 250 * time.Millisecond,
				TrimInterval: time.Hour, MaxMessageSize: 4096, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second, PoolSize: 7}},
		{"redis+cluster://:pw@10.0.0.1:7000,10.0.0.2,h3:7002/?wait=1&wait_timeout=250ms",
			redisstream.Options{Cluster: true, Addrs: []string{"10.0.0.1:7000", "10.0.0.2:6379", "h3:7002"}, Password: "pw",
				WaitReplicas: 1, WaitTimeout: 250 * time.Millisecond}},
		{"redis+sentinel://app:pw@s1:26379,s2:26380/mymaster/2?sentinel_password=spw",
			redisstream.Options{MasterName: "mymaster", Addrs: []string{"s1:26379", "s2:26380"}, Username: "app", Password: "pw",
				DB: 2, SentinelPassword: "spw"}},
		{"redis+sentinel://s1/mymaster", redisstream.Options{MasterName: "mymaster", Addrs: []string{"s1:26379"}}},
	} {
		u, err := bus.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("bus.ParseURL(%q): %v", tc.url, err)
		}
		got, err := redisstream.ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.url, got, tc.want)
		}
	}

	u, _ := bus.ParseURL("rediss://user:pw@secure.example:6390")
	o, err := redisstream.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS == nil || o.TLS.ServerName != "secure.example" || o.Addr != "secure.example:6390" {
		t.Errorf("rediss:// gave TLS %+v, Addr %q; want TLS verifying secure.example", o.TLS, o.Addr)
	}
}

func TestParseURLReportsEveryProblem(t *testing.T) {
	const secret = "hunter2-secret"
	raw := "redis://app:" + secret + "@h/x?visibility_timeout=soon&max_message_size=-4&colour=blue&claim_interval=1ms"
	_, err := bus.Open(context.Background(), raw)
	if !errors.Is(err, bus.ErrBadURL) {
		t.Fatalf("Open: %v, want ErrBadURL", err)
	}
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("Open error = %v, want a ConfigError with 5 problems (path, visibility_timeout, max_message_size, colour, claim_interval)", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error shows the password: %v", err)
	}
	_, err = redisstream.New(context.Background(), redisstream.Options{DB: -1, MaxMessageSize: 1 << 30, PoolSize: -1})
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("New with bad options: %v, want ErrBadConfig with 3 problems", err)
	}
	for raw, want := range map[string]int{
		"redis://h1,h2":                           1, // two hosts, standalone
		"redis+cluster://h1,h2/3":                 1, // a cluster has database 0 only
		"redis+sentinel://s1,s2":                  1, // no master name
		"redis+sentinel://s1/m/x?wait=-1":         2, // database, wait
		"redis+cluster://h1,,h2?wait_timeout=1us": 2, // empty host, wait_timeout
	} {
		_, err := bus.Open(context.Background(), raw)
		if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) || len(ce.Problems) != want {
			t.Errorf("Open(%q) = %v, want ErrBadURL with %d problems", raw, err, want)
		}
	}
	_, err = redisstream.New(context.Background(), redisstream.Options{Cluster: true, MasterName: "m", Addr: "h:1", SentinelPassword: "x"})
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || strings.Contains(err.Error(), "x\"") {
		t.Errorf("New with Cluster and MasterName: %v, want 1 problem", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	// A server that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A port nobody listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()

	for _, addr := range []string{silent.Addr().String(), closed.Addr().String()} {
		raw := "redis://:pw@" + addr + "?dial_timeout=300ms"
		// The bound under test is the dial timeout; ctx only keeps a
		// regression from hanging the suite.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		b, err := bus.Open(ctx, raw)
		cancel()
		if b != nil {
			b.Close()
		}
		if !errors.Is(err, bus.ErrUnreachable) {
			t.Errorf("Open(%s): %v, want ErrUnreachable", redact(raw), err)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestOpenWrongCredentials(t *testing.T) {
	u, err := url.Parse(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "not-the-password-42"
	u.User = url.UserPassword("omnibus-no-such-user", secret)
	_, err = bus.Open(context.Background(), u.String())
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("Open with an unknown user: %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error shows the password: %v", err)
	}
}

// TestACLUser logs in as a Redis ACL user made for the test, and fails with
// ErrAuth on a wrong password for it.
func TestACLUser(t *testing.T) {
	admin := newBroker(t, options(t)).Client()
	ctx := context.Background()
	user := "omnibus-test-" + bus.NewID()[24:]
	password := bus.NewID()
	// The permissions the package documentation asks for, and no more.
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">"+password, "~*",
		"+@stream", "+@sortedset", "+@scripting", "+ping", "+info", "+time").Err(); err != nil {
		if brokertest.InCI() {
			t.Fatalf("cannot create an ACL user on the test server: %v", err)
		}
		t.Skipf("cannot create an ACL user on this server: %v", err)
	}
	t.Cleanup(func() { admin.Do(ctx, "ACL", "DELUSER", user) })

	o := options(t)
	o.Username, o.Password = user, password
	b := newBroker(t, o)
	topic := brokertest.Name(t)
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("as an ACL user"))); err != nil {
		t.Fatal(err)
	}
	d := receive(t, sub)
	nack(t, d, bus.NackOptions{Delay: 10 * time.Millisecond})
	d = receive(t, sub)
	nack(t, d, bus.NackOptions{DeadLetter: true})
	if n, err := b.Trim(ctx, topic); err != nil {
		t.Fatalf("Trim as the ACL user: %v (removed %d)", err, n)
	}

	o.Password = "wrong-" + password
	_, err = redisstream.New(ctx, o)
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("New with a wrong password: %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), o.Password) {
		t.Fatalf("error shows the password: %v", err)
	}
}
