package redisstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The security tests run against the TLS port and the ACL user omnibus
// that scripts/brokers sets up: the user may touch the keys omnibus-* and
// omnibus:* only, and no @dangerous command but INFO.

func secureOptions(t *testing.T, sec brokertest.Security, scheme, addr, password string) redisstream.Options {
	t.Helper()
	u := &url.URL{Scheme: scheme, User: url.UserPassword(sec.User, password), Host: addr, Path: "/0"}
	o, err := redisstream.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func roundTrip(t *testing.T, b bus.Broker) {
	t.Helper()
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{})
	m := bus.NewMessage([]byte("secured " + topic))
	publish(t, b, topic, m)
	d := receive(t, sub)
	if d.Message().ID != m.ID || string(d.Message().Body) != string(m.Body) {
		t.Fatalf("received %q, want %q", d.Message().Body, m.Body)
	}
	ack(t, d)
	sub.Close()
}

// TestTLS publishes and consumes over Redis's TLS port as the ACL user,
// trusting the test CA, and checks that verification is on by default:
// rediss:// with the system's roots, or with another CA, is refused with
// an error naming the certificate.
func TestTLS(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "redis", sec.RedisTLS)

	o := secureOptions(t, sec, "rediss", sec.RedisTLS, sec.Password)
	o.TLS.RootCAs = sec.RootCAs
	roundTrip(t, newBroker(t, o))

	// The same by URL, the CA given by tls_ca.
	raw := (&url.URL{Scheme: "rediss", User: url.UserPassword(sec.User, sec.Password), Host: sec.RedisTLS,
		Path: "/0", RawQuery: "tls_ca=" + url.QueryEscape(sec.CAFile)}).String()
	b, err := bus.Open(context.Background(), raw)
	if err != nil {
		t.Fatalf("Open with tls_ca: %v", err)
	}
	defer b.Close()
	roundTrip(t, b)

	for name, roots := range map[string]*x509.CertPool{"system roots": nil, "another CA": x509.NewCertPool()} {
		o := secureOptions(t, sec, "rediss", sec.RedisTLS, sec.Password)
		o.TLS = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
		o.DialTimeout = 5 * time.Second
		_, err := redisstream.New(context.Background(), o)
		if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v; want ErrUnreachable naming the certificate", name, err)
			continue
		}
		if strings.Contains(err.Error(), sec.Password) {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestACL: the ACL user works on its keys and gets ErrForbidden elsewhere.
func TestACL(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "redis", sec.RedisAddr)
	b := newBroker(t, secureOptions(t, sec, "redis", sec.RedisAddr, sec.Password))
	roundTrip(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topic := "forbidden-" + bus.NewID()
	err := b.Publish(ctx, topic, bus.NewMessage([]byte("x")))
	if !errors.Is(err, bus.ErrForbidden) {
		t.Fatalf("Publish to %s = %v; want ErrForbidden", topic, err)
	}
	t.Logf("publish: %v", err)
	err = b.Publish(ctx, topic, bus.NewMessage([]byte("x")), bus.NewMessage([]byte("y")))
	if !errors.Is(err, bus.ErrForbidden) {
		t.Fatalf("Publish of two to %s = %v; want ErrForbidden", topic, err)
	}
	_, err = b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if !errors.Is(err, bus.ErrForbidden) {
		t.Fatalf("Subscribe to %s = %v; want ErrForbidden", topic, err)
	}
	t.Logf("subscribe: %v", err)
}

// TestWrongCredentials: a wrong password, or an unknown user, fails New
// with ErrAuth after a bounded number of connections, and nothing dials
// again afterwards; the password appears in neither error nor logs.
func TestWrongCredentials(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "redis", sec.RedisAddr)
	addr, dials := brokertest.CountingProxy(t, sec.RedisAddr)
	wrong := "wrong-" + sec.Password
	for _, user := range []string{sec.User, "nobody-" + bus.NewID()} {
		before := dials()
		o := secureOptions(t, sec, "redis", addr, wrong)
		o.Username = user
		_, err := redisstream.New(context.Background(), o)
		if !errors.Is(err, bus.ErrAuth) {
			t.Fatalf("user %s with a wrong password: %v; want ErrAuth", user, err)
		}
		t.Logf("user %s: %v", user, err)
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), sec.Password) {
			t.Fatalf("the error shows the password: %v", err)
		}
		time.Sleep(time.Second)
		if n := dials() - before; n < 1 || n > 2 {
			t.Fatalf("user %s: %d connections for one New with a wrong password; want 1 or 2 (no retries)", user, n)
		}
	}
}

// TestOptionsHidePassword: printing or logging Options, as given or as
// parsed from a URL, does not show the password.
func TestOptionsHidePassword(t *testing.T) {
	const secret = "s3cret-Pa55"
	u, err := url.Parse("rediss://app:" + secret + "@cache.example:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	o, err := redisstream.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.NoSecretInPrint(t, secret, o)
	brokertest.NoSecretInPrint(t, secret, &o)
	if s := o.String(); !strings.Contains(s, "Password:xxxxx") || !strings.Contains(s, "Addr:cache.example:6380") {
		t.Errorf("String() = %s; want the password hidden and the other fields", s)
	}
}
