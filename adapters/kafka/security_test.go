package kafka_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The security tests run against the listeners and the user that
// scripts/brokers sets up: SASL_PLAINTEXT, SASL_SSL and SSL beside the
// plain listener, the user omnibus for PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512, allowed by ACLs the topics omnibus-* and every group.

func saslURL(sec brokertest.Security, addr, password, mechanism, query string) string {
	u := url.URL{Scheme: "kafka", User: url.UserPassword(sec.User, password), Host: addr,
		RawQuery: "sasl=" + mechanism + "&session_timeout=6s&heartbeat_interval=200ms&dial_timeout=10s" + query}
	return u.String()
}

func open(t *testing.T, raw string) bus.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, raw)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// groupRoundTrip publishes a message and receives it through a consumer
// group.
func groupRoundTrip(t *testing.T, b bus.Broker) {
	t.Helper()
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "secure"})
	defer sub.Close()
	m := bus.NewMessage([]byte("secured " + topic))
	publish(t, b, topic, m)
	d := receive(t, sub, 30*time.Second)
	if d.Message().ID != m.ID {
		t.Fatalf("received %q, want %q", d.Message().Body, m.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// TestSASL round-trips a message through a consumer group for each
// mechanism on SASL_PLAINTEXT and on SASL_SSL (trusting the test CA), and
// checks that a wrong password is refused with ErrAuth without appearing
// in the error.
func TestSASL(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "kafka", sec.KafkaSASL)
	sec.Require(t, "kafka", sec.KafkaSASLS)
	tlsQuery := "&tls_ca=" + url.QueryEscape(sec.CAFile)
	for _, tc := range []struct{ mech, listener, addr, query string }{
		{"plain", "sasl_plaintext", sec.KafkaSASL, ""},
		{"scram-sha-256", "sasl_plaintext", sec.KafkaSASL, ""},
		{"scram-sha-512", "sasl_ssl", sec.KafkaSASLS, tlsQuery},
		{"scram-sha-256", "sasl_ssl", sec.KafkaSASLS, tlsQuery},
	} {
		t.Run(tc.mech+"/"+tc.listener, func(t *testing.T) {
			groupRoundTrip(t, open(t, saslURL(sec, tc.addr, sec.Password, tc.mech, tc.query)))

			wrong := "wrong-" + sec.Password
			_, err := bus.Open(context.Background(), saslURL(sec, tc.addr, wrong, tc.mech, tc.query))
			if !errors.Is(err, bus.ErrAuth) {
				t.Fatalf("Open with a wrong password: %v; want ErrAuth", err)
			}
			if strings.Contains(err.Error(), sec.Password) {
				t.Fatalf("the error shows the password: %v", err)
			}
			t.Logf("wrong password: %v", err)
		})
	}
}

// TestTLS round-trips over the SSL listener with the test CA given by URL,
// and checks that verification is on by default: the system's roots do
// not know the test CA.
func TestTLS(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "kafka", sec.KafkaSSL)
	groupRoundTrip(t, open(t, "kafka://"+sec.KafkaSSL+"?tls_ca="+url.QueryEscape(sec.CAFile)+
		"&session_timeout=6s&heartbeat_interval=200ms"))

	for _, raw := range []string{
		"kafka://" + sec.KafkaSSL + "?tls=true&dial_timeout=5s",
		saslURL(sec, sec.KafkaSASLS, sec.Password, "scram-sha-512", "&tls=true"),
	} {
		_, err := bus.Open(context.Background(), raw)
		if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Open without the test CA: %v; want ErrUnreachable naming the certificate", err)
		}
		if strings.Contains(err.Error(), sec.Password) {
			t.Fatalf("the error shows the password: %v", err)
		}
		t.Logf("unknown CA: %v", err)
	}
}

// TestForbiddenTopic: the user omnibus may not use a topic outside
// omnibus-*: Publish and Subscribe fail with ErrForbidden.
func TestForbiddenTopic(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "kafka", sec.KafkaSASL)
	b := open(t, saslURL(sec, sec.KafkaSASL, sec.Password, "scram-sha-256", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := "forbidden-" + bus.NewID()
	err := b.Publish(ctx, topic, bus.NewMessage([]byte("x")))
	if !errors.Is(err, bus.ErrForbidden) {
		t.Fatalf("Publish to %s = %v; want ErrForbidden", topic, err)
	}
	t.Logf("publish: %v", err)
	_, err = b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "secure"})
	if !errors.Is(err, bus.ErrForbidden) {
		t.Fatalf("Subscribe to %s = %v; want ErrForbidden", topic, err)
	}
	t.Logf("subscribe: %v", err)
}

// TestWrongCredentials: a wrong password, or an unknown user, fails Open
// with ErrAuth after a bounded number of connections, and nothing dials
// again afterwards: Open does not retry refused credentials.
func TestWrongCredentials(t *testing.T) {
	sec := brokertest.Secure(t)
	sec.Require(t, "kafka", sec.KafkaSASL)
	addr, dials := brokertest.CountingProxy(t, sec.KafkaSASL)
	wrong := "wrong-" + sec.Password
	for _, tc := range []struct{ mech, user string }{
		{"plain", sec.User}, {"scram-sha-256", "nobody-" + bus.NewID()}, {"scram-sha-512", sec.User},
	} {
		mech, user := tc.mech, tc.user
		before := dials()
		u := url.URL{Scheme: "kafka", User: url.UserPassword(user, wrong), Host: addr, RawQuery: "sasl=" + mech}
		_, err := bus.Open(context.Background(), u.String())
		if !errors.Is(err, bus.ErrAuth) {
			t.Fatalf("%s user %s with a wrong password: %v; want ErrAuth", mech, user, err)
		}
		if strings.Contains(err.Error(), wrong) {
			t.Fatalf("the error shows the password: %v", err)
		}
		// kafka-go opens a connection for its requests and one for its
		// metadata, and may dial again while Open gives up; a retry
		// loop would go on dialling.
		time.Sleep(500 * time.Millisecond)
		settled := dials()
		time.Sleep(time.Second)
		if n := dials() - before; n < 1 || n > 4 || dials() != settled {
			t.Fatalf("%s user %s: %d connections for one Open with a wrong password, %d of them after it returned; want 1 to 4, and none later",
				mech, user, n, dials()-settled)
		}
		t.Logf("%s user %s: %d connection(s): %v", mech, user, dials()-before, err)
	}
}

// TestOptionsHidePassword: printing or logging Options parsed from a URL
// does not show the SASL password.
func TestOptionsHidePassword(t *testing.T) {
	const secret = "s3cret-Pa55"
	u, err := url.Parse("kafka://app:" + secret + "@k1:9092?sasl=scram-sha-512&tls=true")
	if err != nil {
		t.Fatal(err)
	}
	o, err := kafka.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.NoSecretInPrint(t, secret, o)
	brokertest.NoSecretInPrint(t, secret, &o)
	brokertest.NoSecretInPrint(t, secret, o.SASL)
}
