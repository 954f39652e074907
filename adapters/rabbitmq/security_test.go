package rabbitmq_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The security tests run against the amqps listener and the user omnibus
// that scripts/brokers sets up: the user may use the objects named
// omnibus-* on its own vhost, and nothing else.

func secureURL(sec brokertest.Security, scheme, addr, password, vhost string) string {
	u := url.URL{Scheme: scheme, User: url.UserPassword(sec.User, password), Host: addr, Path: "/" + vhost}
	return u.String()
}

// roundTrip publishes one message and receives it on a fresh topic.
func roundTrip(t *testing.T, b bus.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Name(t)
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()
	m := bus.NewMessage([]byte("secured " + topic))
	if err := b.Publish(ctx, topic, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if d.Message().ID != m.ID || string(d.Message().Body) != string(m.Body) {
		t.Fatalf("received %q, want %q", d.Message().Body, m.Body)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// TestTLS publishes and consumes over the broker's amqps listener with the
// test CA, given as Options.TLS and by URL (cacertfile), and checks that
// verification is on by default: without the test CA, and with another
// CA, the connection is refused with an error naming the certificate.
func TestTLS(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "rabbitmq", sec.AMQPSAddr)
	raw := secureURL(sec, "amqps", sec.AMQPSAddr, sec.Password, sec.AMQPVhost)

	t.Run("options", func(t *testing.T) {
		b := connect(t, rabbitmq.Options{URL: raw, TLS: &tls.Config{RootCAs: sec.RootCAs, MinVersion: tls.VersionTLS12}})
		defer b.Close()
		roundTrip(t, b)
	})
	t.Run("url", func(t *testing.T) {
		b, err := bus.Open(context.Background(), raw+"?cacertfile="+url.QueryEscape(sec.CAFile))
		if err != nil {
			t.Fatalf("Open with cacertfile: %v", err)
		}
		defer b.Close()
		roundTrip(t, b)
	})
	t.Run("unknown CA", func(t *testing.T) {
		for name, open := range map[string]func() error{
			"system roots": func() error {
				_, err := bus.Open(context.Background(), raw+"?dial_timeout=5s")
				return err
			},
			"another CA": func() error {
				_, err := rabbitmq.New(context.Background(), rabbitmq.Options{URL: raw, DialTimeout: 5 * time.Second,
					TLS: &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}})
				return err
			},
		} {
			err := open()
			if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s: %v; want ErrUnreachable naming the certificate", name, err)
				continue
			}
			if strings.Contains(err.Error(), sec.Password) {
				t.Errorf("%s: the error shows the password: %v", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
	})
}

// TestVhostPermission: the user omnibus works on its vhost and is refused,
// with ErrForbidden rather than ErrAuth, on the default vhost.
func TestVhostPermission(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "rabbitmq", sec.AMQPAddr)
	logger, logs := brokertest.Logs()

	b := connect(t, rabbitmq.Options{URL: secureURL(sec, "amqp", sec.AMQPAddr, sec.Password, sec.AMQPVhost), Logger: logger})
	roundTrip(t, b)
	b.Close()

	_, err := rabbitmq.New(context.Background(), rabbitmq.Options{
		URL: secureURL(sec, "amqp", sec.AMQPAddr, sec.Password, ""), Logger: logger})
	if !errors.Is(err, bus.ErrForbidden) || errors.Is(err, bus.ErrAuth) {
		t.Fatalf("New on the default vhost = %v; want ErrForbidden", err)
	}
	t.Logf("default vhost: %v", err)
	if strings.Contains(err.Error(), sec.Password) || strings.Contains(logs(), sec.Password) {
		t.Fatalf("the password appears in the error or the logs:\n%v\n%s", err, logs())
	}
}

// TestForbiddenTopic: on its own vhost, the user may not declare, publish
// to or consume from objects outside omnibus-*.
func TestForbiddenTopic(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "rabbitmq", sec.AMQPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, topology := range []rabbitmq.Topology{rabbitmq.TopologyExchange, rabbitmq.TopologyQueue} {
		t.Run(string(topology), func(t *testing.T) {
			b := connect(t, rabbitmq.Options{URL: secureURL(sec, "amqp", sec.AMQPAddr, sec.Password, sec.AMQPVhost), Topology: topology})
			defer b.Close()
			topic := "forbidden-" + bus.NewID()
			err := b.Publish(ctx, topic, bus.NewMessage([]byte("x")))
			if !errors.Is(err, bus.ErrForbidden) {
				t.Fatalf("Publish to %s = %v; want ErrForbidden", topic, err)
			}
			t.Logf("publish: %v", err)
			_, err = b.Subscribe(ctx, topic, bus.SubscribeOptions{})
			if !errors.Is(err, bus.ErrForbidden) {
				t.Fatalf("Subscribe to %s = %v; want ErrForbidden", topic, err)
			}
			t.Logf("subscribe: %v", err)
			// The broker is still usable for what the user may do.
			roundTrip(t, b)
		})
	}
}

// TestWrongCredentials: a wrong password fails New with ErrAuth after one
// connection, and nothing dials again afterwards; the password appears in
// neither the error nor the logs.
func TestWrongCredentials(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "rabbitmq", sec.AMQPAddr)
	addr, dials := brokertest.CountingProxy(t, sec.AMQPAddr)
	logger, logs := brokertest.Logs()
	wrong := "wrong-" + sec.Password
	for _, user := range []string{sec.User, "nobody-" + bus.NewID()} {
		before := dials()
		raw := (&url.URL{Scheme: "amqp", User: url.UserPassword(user, wrong), Host: addr, Path: "/" + sec.AMQPVhost}).String()
		_, err := rabbitmq.New(context.Background(), rabbitmq.Options{URL: raw, Logger: logger})
		if !errors.Is(err, bus.ErrAuth) {
			t.Fatalf("user %s with a wrong password: %v; want ErrAuth", user, err)
		}
		t.Logf("user %s: %v", user, err)
		for _, leak := range []string{wrong, sec.Password} {
			if strings.Contains(err.Error(), leak) || strings.Contains(logs(), leak) {
				t.Fatalf("the password appears in the error or the logs:\n%v\n%s", err, logs())
			}
		}
		time.Sleep(time.Second)
		if n := dials() - before; n != 1 {
			t.Fatalf("user %s: %d connections for one New with a wrong password; want 1 (no retries)", user, n)
		}
	}
}

// TestOptionsHidePassword: printing or logging Options, as given or as
// parsed from a URL, does not show the password.
func TestOptionsHidePassword(t *testing.T) {
	const secret = "s3cret-Pa55"
	raw := "amqps://app:" + secret + "@broker.example:5671/vhost?heartbeat=5"
	brokertest.NoSecretInPrint(t, secret, rabbitmq.Options{URL: raw})
	u, err := url.Parse(raw + "&topology=queue")
	if err != nil {
		t.Fatal(err)
	}
	o, err := rabbitmq.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.NoSecretInPrint(t, secret, o)
	brokertest.NoSecretInPrint(t, secret, &o)
	if s := o.String(); !strings.Contains(s, "amqps://app:xxxxx@broker.example:5671/vhost") || !strings.Contains(s, "Topology:queue") {
		t.Errorf("String() = %s; want the redacted URL and the other fields", s)
	}
}
