package rabbitmq_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// TestTLS publishes and consumes over amqps:// through a TLS front with a
// certificate made for the test, and checks that verification is on by
// default: the same URL without the test's roots is refused.
func TestTLS(t *testing.T) {
	plain, err := url.Parse(brokertest.AMQP(t))
	if err != nil {
		t.Fatal(err)
	}
	addr, roots := brokertest.TLSFront(t, plain.Host)
	secure := *plain
	secure.Scheme, secure.Host = "amqps", addr

	b := connect(t, rabbitmq.Options{URL: secure.String(),
		TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := "tls-" + bus.NewID()
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Publish(ctx, topic, bus.NewMessage([]byte("over TLS"))); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil || string(d.Message().Body) != "over TLS" {
		t.Fatalf("Receive over TLS = %v, %v", d, err)
	}
	d.Ack(ctx)

	// By URL alone, the system's roots do not know the test certificate.
	_, err = bus.Open(ctx, secure.String()+"?dial_timeout=2s")
	if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("amqps:// to an unknown certificate = %v, want ErrUnreachable naming the certificate", err)
	}
	if pw, _ := plain.User.Password(); pw != "" && strings.Contains(err.Error(), ":"+pw+"@") {
		t.Fatalf("error shows the password: %v", err)
	}
}
