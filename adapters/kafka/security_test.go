package kafka_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// TestSASL round-trips a message through a consumer group on a broker
// listener that requires SASL, once per mechanism, and checks that a wrong
// password is refused with bus.ErrAuth without appearing in the error.
// scripts/brokers starts no such listener, so the test runs only when
// pointed at one:
//
//	OMNIBUS_KAFKA_SASL_BROKERS      host:port of a SASL_PLAINTEXT listener
//	OMNIBUS_KAFKA_SASL_SSL_BROKERS  host:port of a SASL_SSL listener (optional)
//	OMNIBUS_KAFKA_TLS_CA            PEM file of the CA of its certificate
//	OMNIBUS_KAFKA_SASL_PLAIN        user:password for PLAIN
//	OMNIBUS_KAFKA_SASL_SCRAM256     user:password for SCRAM-SHA-256
//	OMNIBUS_KAFKA_SASL_SCRAM512     user:password for SCRAM-SHA-512
func TestSASL(t *testing.T) {
	plain := os.Getenv("OMNIBUS_KAFKA_SASL_BROKERS")
	if plain == "" {
		t.Skip("OMNIBUS_KAFKA_SASL_BROKERS is not set: no SASL listener to test against")
	}
	type target struct{ name, query, addr string }
	targets := []target{{"sasl_plaintext", "", plain}}
	if tls := os.Getenv("OMNIBUS_KAFKA_SASL_SSL_BROKERS"); tls != "" {
		targets = append(targets, target{"sasl_ssl", "&tls_ca=" + url.QueryEscape(os.Getenv("OMNIBUS_KAFKA_TLS_CA")), tls})
	}
	for _, mech := range []struct{ env, param string }{
		{"OMNIBUS_KAFKA_SASL_PLAIN", "plain"},
		{"OMNIBUS_KAFKA_SASL_SCRAM256", "scram-sha-256"},
		{"OMNIBUS_KAFKA_SASL_SCRAM512", "scram-sha-512"},
	} {
		user, pass, ok := strings.Cut(os.Getenv(mech.env), ":")
		if !ok {
			t.Logf("%s not set: skipping %s", mech.env, mech.param)
			continue
		}
		for _, tg := range targets {
			t.Run(mech.param+"/"+tg.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				raw := "kafka://" + url.UserPassword(user, pass).String() + "@" + tg.addr + "?sasl=" + mech.param +
					"&session_timeout=6s&heartbeat_interval=200ms" + tg.query
				b, err := bus.Open(ctx, raw)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer b.Close()
				topic := topicName(t)
				sub := subscribe(t, b, topic, bus.SubscribeOptions{Group: "secure"})
				m := bus.NewMessage([]byte("over " + mech.param))
				publish(t, b, topic, m)
				d := receive(t, sub, 20*time.Second)
				if d.Message().ID != m.ID {
					t.Fatalf("received %q", d.Message().Body)
				}
				d.Ack(ctx)

				wrong := strings.Replace(raw, url.UserPassword(user, pass).String(), url.UserPassword(user, "wrong-"+pass).String(), 1)
				_, err = bus.Open(ctx, wrong)
				if !errors.Is(err, bus.ErrAuth) {
					t.Fatalf("Open with a wrong password: %v, want ErrAuth", err)
				}
				if strings.Contains(err.Error(), "wrong-"+pass) || strings.Contains(err.Error(), pass) {
					t.Fatalf("error reveals the password: %v", err)
				}
				t.Logf("wrong password: %v", err)
			})
		}
	}
}
