package brokertest

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// SecurityFile is the file, in the state directory of scripts/brokers,
// that describes its TLS listeners and the user omnibus.
const SecurityFile = "security.env"

// BrokersDirEnv names the state directory of scripts/brokers; without it,
// the helpers look for .brokers in the module's root.
const BrokersDirEnv = "OMNIBUS_BROKERS_DIR"

// Security describes the TLS listeners and the password-protected user
// that scripts/brokers sets up on every broker. Each field comes from the
// environment variable in its comment, or else from SecurityFile.
type Security struct {
	CAFile   string         // OMNIBUS_TLS_CA: PEM of the CA that signed the brokers' certificate
	RootCAs  *x509.CertPool // CAFile's certificates
	User     string         // OMNIBUS_SECURE_USER
	Password string         // OMNIBUS_SECURE_PASSWORD

	AMQPSAddr  string // OMNIBUS_AMQPS_ADDR: RabbitMQ's TLS listener
	AMQPAddr   string // OMNIBUS_AMQP_SECURE_ADDR: RabbitMQ's plain listener
	AMQPVhost  string // OMNIBUS_AMQP_SECURE_VHOST: the only vhost User may use
	RedisAddr  string // OMNIBUS_REDIS_SECURE_ADDR: Redis's plain port
	RedisTLS   string // OMNIBUS_REDIS_TLS_ADDR: Redis's TLS port
	KafkaSASL  string // OMNIBUS_KAFKA_SASL_BROKERS: SASL_PLAINTEXT listener
	KafkaSASLS string // OMNIBUS_KAFKA_SASL_SSL_BROKERS: SASL_SSL listener
	KafkaSSL   string // OMNIBUS_KAFKA_SSL_BROKERS: SSL listener
}

// Secure returns the Security that scripts/brokers wrote. Without it the
// test is skipped, or fails under CI, like a broker that does not answer.
// It does not dial: use Require for the listeners a test needs.
func Secure(t testing.TB) Security {
	t.Helper()
	s, err := loadSecurity()
	if err != nil {
		if InCI() {
			t.Fatalf("brokertest: %v\nunder CI a broker test fails instead of skipping; start the brokers with: make up", err)
			return s
		}
		t.Skipf("brokertest: %v\nstart the brokers with: make up (scripts/brokers up), or set %s", err, BrokersDirEnv)
	}
	return s
}

// Require dials addr (a listener of broker) and skips the test, or fails it
// under CI, when nothing answers there.
func (s Security) Require(t testing.TB, broker, addr string) {
	t.Helper()
	require(t, broker, "its address in "+SecurityFile, []string{addr}, InCI())
}

var securityKeys = map[string]func(*Security) *string{
	"OMNIBUS_TLS_CA":                 func(s *Security) *string { return &s.CAFile },
	"OMNIBUS_SECURE_USER":            func(s *Security) *string { return &s.User },
	"OMNIBUS_SECURE_PASSWORD":        func(s *Security) *string { return &s.Password },
	"OMNIBUS_AMQPS_ADDR":             func(s *Security) *string { return &s.AMQPSAddr },
	"OMNIBUS_AMQP_SECURE_ADDR":       func(s *Security) *string { return &s.AMQPAddr },
	"OMNIBUS_AMQP_SECURE_VHOST":      func(s *Security) *string { return &s.AMQPVhost },
	"OMNIBUS_REDIS_SECURE_ADDR":      func(s *Security) *string { return &s.RedisAddr },
	"OMNIBUS_REDIS_TLS_ADDR":         func(s *Security) *string { return &s.RedisTLS },
	"OMNIBUS_KAFKA_SASL_BROKERS":     func(s *Security) *string { return &s.KafkaSASL },
	"OMNIBUS_KAFKA_SASL_SSL_BROKERS": func(s *Security) *string { return &s.KafkaSASLS },
	"OMNIBUS_KAFKA_SSL_BROKERS":      func(s *Security) *string { return &s.KafkaSSL },
}

func loadSecurity() (Security, error) {
	var s Security
	file, ferr := securityPath()
	var fromFile map[string]string
	if ferr == nil {
		fromFile, ferr = readEnvFile(file)
	}
	var missing []string
	for key, field := range securityKeys {
		v := strings.TrimSpace(os.Getenv(key))
		if v == "" {
			v = fromFile[key]
		}
		if v == "" {
			missing = append(missing, key)
			continue
		}
		*field(&s) = v
	}
	if len(missing) > 0 {
		if ferr != nil {
			return s, fmt.Errorf("no security settings: %w", ferr)
		}
		return s, fmt.Errorf("%s lacks %s", file, strings.Join(missing, ", "))
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return s, fmt.Errorf("the test CA: %w", err)
	}
	s.RootCAs = x509.NewCertPool()
	if !s.RootCAs.AppendCertsFromPEM(pem) {
		return s, fmt.Errorf("the test CA %s holds no PEM certificate", s.CAFile)
	}
	return s, nil
}

// securityPath finds SecurityFile: in $OMNIBUS_BROKERS_DIR, or in .brokers
// beside the go.work above the working directory (the repository's root,
// whichever of its modules the test is in).
func securityPath() (string, error) {
	if dir := strings.TrimSpace(os.Getenv(BrokersDirEnv)); dir != "" {
		return filepath.Join(dir, SecurityFile), nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".brokers", SecurityFile), nil
}

// RepoRoot returns the repository's root: the directory of the go.work
// file above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// readEnvFile reads KEY=VALUE lines; # starts a comment line.
func readEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

// CountingProxy forwards every connection it accepts to target and counts
// them, so that a test can tell how often a client dialled. It returns its
// address and the count so far; it stops when the test ends.
func CountingProxy(t testing.TB, target string) (addr string, dials func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-done:
			c.Close()
			return false
		default:
		}
		conns = append(conns, c)
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			up, err := net.DialTimeout("tcp", target, DialTimeout)
			if err != nil {
				c.Close()
				continue
			}
			if !track(c) || !track(up) {
				c.Close()
				up.Close()
				return
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		close(done)
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), func() int { return int(n.Load()) }
}

// Logs returns a logger that keeps every record, at every level, and a
// function that returns the text of those records so far.
func Logs() (*slog.Logger, func() string) {
	w := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w.String
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
