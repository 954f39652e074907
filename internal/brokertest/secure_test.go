package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSecureFromFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BrokersDirEnv, dir)
	for key := range securityKeys {
		t.Setenv(key, "")
	}

	// No file: a skip outside CI, a failure under it.
	t.Setenv("CI", "")
	local := &recorder{TB: t}
	Secure(local)
	if local.failed != "" || !strings.Contains(local.skipped, "no security settings") {
		t.Errorf("without the file, outside CI: skipped=%q failed=%q", local.skipped, local.failed)
	}
	t.Setenv("CI", "true")
	ci := &recorder{TB: t}
	Secure(ci)
	if ci.skipped != "" || !strings.Contains(ci.failed, "no security settings") {
		t.Errorf("without the file, under CI: skipped=%q failed=%q", ci.skipped, ci.failed)
	}

	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, selfSigned(t), 0o644); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# comment\n\n")
	for key := range securityKeys {
		v := "127.0.0.1:1"
		switch key {
		case "OMNIBUS_TLS_CA":
			v = ca
		case "OMNIBUS_SECURE_PASSWORD":
			v = "from-file"
		}
		b.WriteString(key + "=" + v + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, SecurityFile), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OMNIBUS_SECURE_USER", "from-env")
	s := Secure(t)
	if s.Password != "from-file" || s.User != "from-env" || s.CAFile != ca || s.RootCAs == nil || s.KafkaSSL != "127.0.0.1:1" {
		t.Errorf("Secure = %+v", s)
	}
}

func TestCountingProxy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); buf := make([]byte, 5); n, _ := c.Read(buf); c.Write(buf[:n]) }()
		}
	}()
	addr, dials := CountingProxy(t, l.Addr().String())
	for i := 1; i <= 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo through the proxy: %q, %v", buf, err)
		}
		c.Close()
		if dials() != i {
			t.Fatalf("after %d connections, dials() = %d", i, dials())
		}
	}
}

// selfSigned returns the PEM of a new self-signed CA certificate.
func selfSigned(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
