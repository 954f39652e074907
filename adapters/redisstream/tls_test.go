package redisstream_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func TestTLS(t *testing.T) {
	o := options(t)
	addr, roots := brokertest.TLSFront(t, o.Addr)

	o.Addr = addr
	o.TLS = &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	b := newBroker(t, o)
	topic := topicName(t)
	sub := subscribe(t, b, topic, bus.SubscribeOptions{})
	publish(t, b, topic, bus.NewMessage([]byte("over TLS")))
	d := receive(t, sub)
	if string(d.Message().Body) != "over TLS" {
		t.Fatalf("got %q", d.Message().Body)
	}
	ack(t, d)

	// rediss:// verifies the server against the system's roots, which do
	// not know this certificate.
	_, err := bus.Open(context.Background(), "rediss://app:tls-secret@"+addr+"?dial_timeout=2s")
	if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("rediss:// to an unknown certificate: %v, want ErrUnreachable naming the certificate", err)
	}
	if strings.Contains(err.Error(), "tls-secret") {
		t.Fatalf("error shows the password: %v", err)
	}
}
