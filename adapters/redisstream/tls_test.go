package redisstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// tlsFront terminates TLS with a certificate of its own for "localhost"
// and forwards the plain bytes to target, standing in for a Redis server
// with TLS.
func tlsFront(t *testing.T, target string) (addr string, roots *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() { defer wg.Done(); io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return net.JoinHostPort("localhost", port), roots
}

func TestTLS(t *testing.T) {
	o := options(t)
	addr, roots := tlsFront(t, o.Addr)

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
