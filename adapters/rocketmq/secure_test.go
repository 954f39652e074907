package rocketmq_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The secure tests run against the secure RocketMQ instance of
// scripts/brokers (OMNIBUS_ROCKETMQ_SECURE_URL): a name server and a
// broker that take TLS only, with the test CA's certificate, and a broker
// that authenticates every request (ACL 2.0) with the user omnibus, whose
// secret key is the password of security.env.

// secureURL returns the instance's URL with the user's secret key and the
// test CA (tls_ca) in it.
func secureURL(t *testing.T) (*url.URL, brokertest.Security) {
	t.Helper()
	raw, sec := brokertest.RocketMQSecure(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	user := sec.User
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, sec.Password)
	q := u.Query()
	if !q.Has("tls_ca") {
		q.Set("tls_ca", sec.CAFile)
	}
	u.RawQuery = q.Encode()
	return u, sec
}

func parse(t *testing.T, u *url.URL) rocketmq.Options {
	t.Helper()
	o, err := rocketmq.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// secureRoundTrip publishes a message and receives it back.
func secureRoundTrip(t *testing.T, b bus.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := brokertest.Name(t)
	m := bus.NewMessage([]byte("over TLS, signed"))
	m.Key = "k"
	if err := b.Publish(ctx, topic, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "secure"})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if d.Message().ID != m.ID || string(d.Message().Body) != string(m.Body) || d.Message().Key != m.Key {
		t.Fatalf("received %q (ID %s), want %q (ID %s)", d.Message().Body, d.Message().ID, m.Body, m.ID)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// TestSecureRoundTrip publishes and consumes over TLS, as the ACL user,
// opened by URL (the CA given by tls_ca) and by Options.
func TestSecureRoundTrip(t *testing.T) {
	u, sec := secureURL(t)
	b, err := bus.Open(context.Background(), u.String())
	if err != nil {
		t.Fatalf("Open(%s): %v", u.Redacted(), err)
	}
	defer b.Close()
	secureRoundTrip(t, b)

	o := parse(t, u)
	o.TLS = &tls.Config{RootCAs: sec.RootCAs, MinVersion: tls.VersionTLS12}
	rb := newBroker(t, o)
	secureRoundTrip(t, rb)
	groups, err := rb.Cluster(context.Background())
	if err != nil || len(groups) == 0 {
		t.Fatalf("Cluster = %v, %v; want the secure broker", groups, err)
	}
	t.Logf("broker groups: %+v", groups)
}

// TestSecureWrongCredentials: a wrong secret key or an unknown user fail
// New (which asks a broker, since the name servers take no credentials),
// and no credentials at all fail the first request to the broker; every
// error matches bus.ErrAuth and shows no secret.
func TestSecureWrongCredentials(t *testing.T) {
	u, sec := secureURL(t)
	wrong := "wrong-" + sec.Password
	noSecret := func(t *testing.T, err error) {
		t.Helper()
		for _, s := range []string{wrong, sec.Password} {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("the error shows the secret key: %v", err)
			}
		}
	}
	for name, user := range map[string]*url.Userinfo{
		"wrong secret": url.UserPassword(sec.User, wrong),
		"unknown user": url.UserPassword("nobody-"+bus.NewID(), sec.Password),
	} {
		t.Run(name, func(t *testing.T) {
			wu := *u
			wu.User = user
			b, err := rocketmq.New(context.Background(), parse(t, &wu))
			if err == nil {
				b.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, bus.ErrAuth) {
				t.Fatalf("New = %v; want an error matching bus.ErrAuth", err)
			}
			noSecret(t, err)
			t.Logf("New: %v", err)
		})
	}
	for name, user := range map[string]*url.Userinfo{"no credentials": nil} {
		t.Run(name, func(t *testing.T) {
			wu := *u
			wu.User = user
			o := parse(t, &wu)
			b := newBroker(t, o)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			topic := brokertest.Name(t)
			err := b.Publish(ctx, topic, bus.NewMessage([]byte("x")))
			if !errors.Is(err, bus.ErrAuth) {
				t.Fatalf("Publish = %v; want an error matching bus.ErrAuth", err)
			}
			var re *rocketmq.ResponseError
			if !errors.As(err, &re) {
				t.Errorf("Publish = %v; want a *rocketmq.ResponseError inside", err)
			}
			t.Logf("publish: %v", err)
			_, err = b.Subscribe(ctx, topic, bus.SubscribeOptions{Group: "g"})
			if !errors.Is(err, bus.ErrAuth) {
				t.Fatalf("Subscribe = %v; want an error matching bus.ErrAuth", err)
			}
			noSecret(t, err)
		})
	}
}

// TestSecureUnknownCA: verification is on, against the system's roots
// unless tls_ca names others: with the system's roots, or a CA that did
// not sign the broker's certificate, New fails with an error naming the
// certificate; so does a name server that is not the one the
// certificate names (tls_server_name).
func TestSecureUnknownCA(t *testing.T) {
	u, sec := secureURL(t)
	other := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(other, otherCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, set := range map[string]func(url.Values){
		"system roots":      func(q url.Values) { q.Del("tls_ca") },
		"another CA":        func(q url.Values) { q.Set("tls_ca", other) },
		"other server name": func(q url.Values) { q.Set("tls_server_name", "broker.example") },
	} {
		wu := *u
		q := wu.Query()
		set(q)
		q.Set("dial_timeout", "5s")
		wu.RawQuery = q.Encode()
		_, err := bus.Open(context.Background(), wu.String())
		if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: Open = %v; want ErrUnreachable naming the certificate", name, err)
			continue
		}
		if strings.Contains(err.Error(), sec.Password) {
			t.Errorf("%s: the error shows the secret key: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestSecurePlainRefused: the secure name server takes no plain TCP.
func TestSecurePlainRefused(t *testing.T) {
	u, _ := secureURL(t)
	pu := &url.URL{Scheme: rocketmq.Scheme, Host: u.Host, RawQuery: "dial_timeout=5s"}
	_, err := bus.Open(context.Background(), pu.String())
	if !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("Open over plain TCP = %v; want ErrUnreachable", err)
	}
	t.Logf("plain TCP: %v", err)
}

// otherCA returns the PEM of a CA certificate that signed nothing.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "another test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseURLSecure(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, otherCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	type want struct {
		tls            bool
		serverName     string
		skip, roots    bool
		access, secret string
	}
	for raw, w := range map[string]want{
		"rocketmqs://h:1":                    {tls: true},
		"rocketmq://h:1?tls=true":            {tls: true},
		"rocketmq://h:1?tls=false":           {},
		"rocketmq://h:1?tls_ca=" + ca:        {tls: true, roots: true},
		"rocketmqs://ns1,ns2:1?tls_ca=" + ca: {tls: true, roots: true},
		"rocketmqs://h:1?tls_server_name=broker.example&tls_skip_verify=true": {tls: true, serverName: "broker.example", skip: true},
		"rocketmqs://AK:SK@h:1":                           {tls: true, access: "AK", secret: "SK"},
		"rocketmqs://AK:s%2Fk%40%3A@h:1":                  {tls: true, access: "AK", secret: "s/k@:"},
		"rocketmq://AK:SK@h:1?tls=true":                   {tls: true, access: "AK", secret: "SK"},
		"rocketmq://AK:SK@h:1?tls=false":                  {access: "AK", secret: "SK"},
		"rocketmq://AK:SK@h:1?tls_ca=" + ca + "&queues=2": {tls: true, roots: true, access: "AK", secret: "SK"},
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		o, err := rocketmq.ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%s): %v", raw, err)
			continue
		}
		got := want{tls: o.TLS != nil, access: o.AccessKey, secret: o.SecretKey}
		if o.TLS != nil {
			got.serverName, got.skip, got.roots = o.TLS.ServerName, o.TLS.InsecureSkipVerify, o.TLS.RootCAs != nil
			if o.TLS.MinVersion < tls.VersionTLS12 {
				t.Errorf("ParseURL(%s): TLS MinVersion %x, want TLS 1.2 at least", raw, o.TLS.MinVersion)
			}
		}
		if got != w {
			t.Errorf("ParseURL(%s) = %+v, want %+v", raw, got, w)
		}
	}

	const secret = "s3cret-Pa55"
	for raw, says := range map[string]string{
		"rocketmq://AK:" + secret + "@h:1":                          "rocketmqs://",
		"rocketmqs://AK@h:1":                                        "SecretKey",
		"rocketmqs://:" + secret + "@h:1":                           "access key",
		"rocketmqs://AK:" + secret + "@h:1?tls_ca=/nonexistent.pem": "tls_ca",
		"rocketmq://AK:" + secret + "@h:1?tls=maybe":                "tls",
		"rocketmq://AK:" + secret + "@h:1?tls_cert=/c.pem":          "tls_key",
		"amqps://AK:" + secret + "@h:1":                             "scheme",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rocketmq.ParseURL(u)
		if !errors.Is(err, bus.ErrBadURL) || !strings.Contains(err.Error(), says) {
			t.Errorf("ParseURL(%s) = %v; want ErrBadURL saying %q", u.Redacted(), err, says)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ParseURL(%s) shows the secret key: %v", u.Redacted(), err)
		}
	}

	// rocketmqs:// is registered: a closed port is unreachable, not an
	// unknown scheme.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := bus.Open(context.Background(), "rocketmqs://"+addr+"?dial_timeout=2s"); !errors.Is(err, bus.ErrUnreachable) {
		t.Errorf("Open(rocketmqs://%s) = %v; want ErrUnreachable", addr, err)
	}
}

// TestSecureOptions: the credentials are checked together, and the secret
// key shows in no error and no printed or logged Options.
func TestSecureOptions(t *testing.T) {
	const secret = "s3cret-Pa55"
	for _, o := range []rocketmq.Options{
		{AccessKey: "AK"},
		{SecretKey: secret},
		{SecurityToken: secret},
	} {
		err := o.Validate()
		if !errors.Is(err, bus.ErrBadConfig) {
			t.Errorf("Validate(%v) = %v; want ErrBadConfig", o, err)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("Validate shows the secret: %v", err)
		}
	}
	if err := (rocketmq.Options{AccessKey: "AK", SecretKey: secret, SecurityToken: "tok"}).Validate(); err != nil {
		t.Errorf("Validate with every credential: %v", err)
	}
	u, err := url.Parse("rocketmqs://AK:" + secret + "@ns.example:9876")
	if err != nil {
		t.Fatal(err)
	}
	o := parse(t, u)
	o.SecurityToken = secret + "-token"
	brokertest.NoSecretInPrint(t, secret, o)
	brokertest.NoSecretInPrint(t, secret, &o)
	if s := o.String(); !strings.Contains(s, "SecretKey:xxxxx") || !strings.Contains(s, "AccessKey:AK") || !strings.Contains(s, "ns.example:9876") {
		t.Errorf("String() = %s; want the secret key hidden and the other fields", s)
	}
}
