package driver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// writeCA writes a self-signed certificate and its key as PEM files.
func writeCA(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func params(t *testing.T, raw string) *Params {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return NewParams(u)
}

func TestParamsTypedAndEveryProblem(t *testing.T) {
	p := params(t, "x://u:s3cret@h/?n=7&d=250ms&b=true&s=v&bad_n=-1&bad_d=soon&bad_b=maybe&stray=1")
	var (
		n, badN    int
		d, badD    time.Duration
		b, badB    bool
		s          string
		untouched  = 42
		missingDur = time.Minute
	)
	p.Int(&n, "n", 1)
	p.Duration(&d, "d")
	p.Bool(&b, "b")
	p.String(&s, "s")
	p.Int(&badN, "bad_n", 0)
	p.Duration(&badD, "bad_d")
	p.Bool(&badB, "bad_b")
	p.Int(&untouched, "absent", 0)
	p.Duration(&missingDur, "absent_too")
	if n != 7 || d != 250*time.Millisecond || !b || s != "v" || untouched != 42 || missingDur != time.Minute {
		t.Fatalf("read n=%d d=%v b=%v s=%q untouched=%d", n, d, b, s, untouched)
	}
	err := p.Err()
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("Err = %v, want ErrBadURL with 4 problems (3 values, 1 unknown)", err)
	}
	for _, want := range []string{"bad_n", "bad_d", "bad_b", `unknown parameter "stray"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err does not name %s: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Err shows the password: %v", err)
	}
}

func TestParamsSeconds(t *testing.T) {
	p := params(t, "x://h/?a=1.5&b=2s")
	var a, b time.Duration
	p.Duration(&a, "a", true)
	p.Duration(&b, "b", true)
	if a != 1500*time.Millisecond || b != 2*time.Second || p.Err() != nil {
		t.Fatalf("a=%v b=%v err=%v", a, b, p.Err())
	}
}

func TestParamsTLS(t *testing.T) {
	ca, key := writeCA(t)
	q := url.Values{"cacertfile": {ca}, "tls_cert": {ca}, "tls_key": {key}, "tls_server_name": {"broker.internal"}}
	p := params(t, "amqps://h:5671/?"+q.Encode())
	cfg := p.TLS(true, false)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if cfg == nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "broker.internal" || cfg.InsecureSkipVerify {
		t.Fatalf("TLS = %+v, want the CA under its alias, the client pair and the server name", cfg)
	}

	// Both spellings at once, a TLS parameter without TLS, half a pair.
	q = url.Values{"cacertfile": {ca}, "tls_ca": {ca}, "tls_cert": {ca}}
	p = params(t, "redis://h/?"+q.Encode())
	if cfg := p.TLS(false, false); cfg != nil {
		t.Fatalf("TLS without a TLS scheme = %+v, want nil", cfg)
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "same parameter") || !strings.Contains(err.Error(), "rediss://") {
		t.Fatalf("Err = %v, want the duplicate and the missing TLS scheme", err)
	}

	// Where a flag turns TLS on, any TLS parameter does too.
	p = params(t, "kafka://h:9092/?tls_skip_verify=true")
	if cfg := p.TLS(false, true); cfg == nil || !cfg.InsecureSkipVerify || p.Err() != nil {
		t.Fatalf("TLS = %+v, err %v", cfg, p.Err())
	}
	p = params(t, "kafka://h:9092/?tls=true")
	if cfg := p.TLS(false, true); cfg == nil || cfg.RootCAs != nil || cfg.ServerName != "h" {
		t.Fatalf("tls=true: %+v", cfg)
	}
	p = params(t, "kafka://h:9092/?tls_ca=/no/such/file")
	p.TLS(false, true)
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "tls_ca") {
		t.Fatalf("missing CA file: %v", err)
	}
}

func TestParamsRest(t *testing.T) {
	p := params(t, "amqp://h/?heartbeat=5&topology=queue")
	var topology string
	p.String(&topology, "topology")
	rest := p.Rest()
	if topology != "queue" || rest.Get("heartbeat") != "5" || len(rest) != 1 || p.Err() != nil {
		t.Fatalf("topology %q, rest %v, err %v", topology, rest, p.Err())
	}
}
