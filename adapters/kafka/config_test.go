package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("kafka://alice:s3cret@h1:9092,h2:9093?sasl=scram-sha-512&partitions=6&replication_factor=3" +
		"&create_topics=false&batch_timeout=5ms&session_timeout=20s&blocking_retry=true&brokers=h3,[::1]:9094&tls=true&compression=zstd&acks=leader")
	o, err := kafka.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"h1:9092", "h2:9093", "h3:9092", "[::1]:9094"}
	if fmt.Sprint(o.Brokers) != fmt.Sprint(want) {
		t.Errorf("Brokers = %v, want %v", o.Brokers, want)
	}
	if o.SASL.Mechanism != kafka.MechanismSCRAMSHA512 || o.SASL.Username != "alice" || o.SASL.Password != "s3cret" {
		t.Errorf("SASL = %+v", o.SASL)
	}
	if o.Partitions != 6 || o.ReplicationFactor != 3 || !o.NoTopicCreation || o.BatchTimeout != 5*time.Millisecond ||
		o.SessionTimeout != 20*time.Second || !o.BlockingRetry || o.TLS == nil || o.Compression != "zstd" || o.Acks != kafka.AcksLeader {
		t.Errorf("Options = %+v", o)
	}
	if u, _ := url.Parse("kafka://localhost"); true {
		if o, err := kafka.ParseURL(u); err != nil || o.Brokers[0] != "localhost:9092" {
			t.Errorf("ParseURL(kafka://localhost) = %v, %v; want localhost:9092", o.Brokers, err)
		}
	}
}

// Every problem of a URL is reported at once, and the password never.
func TestParseURLReportsEveryProblem(t *testing.T) {
	_, err := bus.Open(context.Background(),
		"kafka://bob:hunter2@h1:9092?partitions=0&batch_timeout=soon&colour=blue&sasl=kerberos&compression=brotli")
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadURL) || !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("Open = %v, want ErrBadURL with 5 problems", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error reveals the password: %v", err)
	}
}

func TestValidate(t *testing.T) {
	err := kafka.Options{
		Partitions:        -1,
		DialTimeout:       -time.Second,
		Compression:       "brotli",
		Acks:              "1",
		SASL:              kafka.SASL{Mechanism: "GSSAPI"},
		HeartbeatInterval: time.Minute,
	}.Validate()
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) || len(ce.Problems) != 7 {
		t.Fatalf("Validate = %v, want 7 problems (no brokers, partitions, dial timeout, compression, acks, SASL, heartbeat)", err)
	}
	if err := (kafka.Options{Brokers: []string{"h:9092"}}).Validate(); err != nil {
		t.Fatalf("Validate of minimal options: %v", err)
	}
}

// Credentials appear neither in printed options nor in connection errors.
func TestCredentialsHidden(t *testing.T) {
	opts := testOptions(t)
	opts.SASL = kafka.SASL{Mechanism: kafka.MechanismPlain, Username: "alice", Password: "s3cret-pw"}
	opts.DialTimeout = 5 * time.Second
	for _, s := range []string{fmt.Sprint(opts), fmt.Sprintf("%+v", opts), fmt.Sprintf("%#v", opts)} {
		if strings.Contains(s, "s3cret-pw") {
			t.Fatalf("printed options reveal the password: %s", s)
		}
	}
	// The test broker's listener has no SASL: the handshake fails.
	_, err := kafka.New(context.Background(), opts)
	if err == nil {
		t.Fatal("New with SASL against a plaintext listener succeeded")
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("error reveals the password: %v", err)
	}
	if !errors.Is(err, bus.ErrAuth) && !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("New = %v, want ErrAuth or ErrUnreachable", err)
	}
	t.Logf("SASL against a plaintext listener: %v", err)
}

// An unreachable broker is reported within the dial timeout.
func TestUnreachable(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:1", "10.255.255.1:9092"} {
		start := time.Now()
		_, err := kafka.New(context.Background(), kafka.Options{Brokers: []string{addr}, DialTimeout: 500 * time.Millisecond})
		if !errors.Is(err, bus.ErrUnreachable) {
			t.Errorf("New(%s) = %v, want ErrUnreachable", addr, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("New(%s) took %v with a 500ms dial timeout", addr, took)
		}
	}
}

func TestGroupOptions(t *testing.T) {
	u, _ := url.Parse("kafka://h:9092?rebalance=eager&instance_id=worker-3&min_insync_replicas=2")
	o, err := kafka.ParseURL(u)
	if err != nil || o.Rebalance != kafka.RebalanceEager || o.InstanceID != "worker-3" || o.MinInsyncReplicas != 2 {
		t.Fatalf("ParseURL = %+v, %v", o, err)
	}
	err = kafka.Options{Brokers: []string{"h:9092"}, Rebalance: "sometimes", InstanceID: "has/slash", MinInsyncReplicas: -1}.Validate()
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("Validate = %v, want 3 problems", err)
	}
}
