package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	kgo "github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
	"github.com/omnibus-mq/omnibus/bus"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("kafka://alice:s3cret@h1:9092,h2:9093?sasl=scram-sha-512&partitions=6&replication_factor=3" +
		"&create_topics=false&batch_timeout=5ms&session_timeout=20s&blocking_retry=true&brokers=h3,[::1]:9094&tls=true&compression=zstd")
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
		o.SessionTimeout != 20*time.Second || !o.BlockingRetry || o.TLS == nil || o.Compression != "zstd" {
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
		SASL:              kafka.SASL{Mechanism: "GSSAPI"},
		HeartbeatInterval: time.Minute,
	}.Validate()
	var ce *bus.ConfigError
	if !errors.Is(err, bus.ErrBadConfig) || !errors.As(err, &ce) || len(ce.Problems) != 6 {
		t.Fatalf("Validate = %v, want 6 problems (no brokers, partitions, dial timeout, compression, SASL, heartbeat)", err)
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

// kafka-go's consumer group sends fixed versions of some requests rather
// than negotiating them; Kafka 4 dropped many old versions (KIP-896). This
// checks that the broker under test still serves every version the
// package depends on.
func TestBrokerServesFixedVersions(t *testing.T) {
	res, err := admin(t).ApiVersions(context.Background(), &kgo.ApiVersionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	served := map[int]kgo.ApiVersionsResponseApiKey{}
	for _, k := range res.ApiKeys {
		served[k.ApiKey] = k
	}
	for _, need := range []struct {
		name     string
		key, min int // versions kafka-go sends: exactly min, or the best of a list starting at min
	}{
		{"FindCoordinator (consumer group, fixed v0)", 10, 0},
		{"JoinGroup (consumer group, v1 or v2)", 11, 2},
		{"SyncGroup (consumer group, fixed v0)", 14, 0},
		{"Heartbeat (consumer group, fixed v0)", 12, 0},
		{"LeaveGroup (consumer group, fixed v0)", 13, 0},
		{"OffsetFetch (consumer group, fixed v1)", 9, 1},
		{"ListOffsets (reader, fixed v1)", 2, 1},
		{"Fetch (reader, v2, v5 or v10)", 1, 10},
		{"Metadata (consumer group leader, v1 or v6)", 3, 6},
	} {
		k, ok := served[need.key]
		if !ok || need.min < k.MinVersion || need.min > k.MaxVersion {
			t.Errorf("%s: broker serves v%d-v%d, kafka-go sends v%d", need.name, k.MinVersion, k.MaxVersion, need.min)
		}
	}
}
