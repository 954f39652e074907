package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"
	fsasl "github.com/twmb/franz-go/pkg/sasl"
	fplain "github.com/twmb/franz-go/pkg/sasl/plain"
	fscram "github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/omnibus-mq/omnibus/bus"
)

// DefaultMaxMessageSize is the message size limit when
// Options.MaxMessageSize is zero: the broker's default message.max.bytes
// (1 MiB and 12 bytes) less 16 KiB for the record framing and the headers
// this package adds (the dead-letter error text is cut to 1 KiB).
const DefaultMaxMessageSize = 1<<20 - headroom

// headroom is what Options.MaxMessageSize leaves below the broker's limit.
const headroom = 16 << 10

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// SASL holds SASL credentials. Its String method hides the password, so
// printing Options or SASL never reveals it.
type SASL struct {
	// Mechanism is MechanismPlain, MechanismSCRAMSHA256 or
	// MechanismSCRAMSHA512 (case-insensitive). Empty turns SASL off.
	Mechanism string
	Username  string
	Password  string
}

func (s SASL) String() string {
	if s.Mechanism == "" {
		return "{none}"
	}
	pw := ""
	if s.Password != "" {
		pw = "xxxxx"
	}
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", s.Mechanism, s.Username, pw)
}

// GoString keeps %#v from printing the password.
func (s SASL) GoString() string { return "kafka.SASL" + s.String() }

// LogValue keeps slog from printing the password.
func (s SASL) LogValue() slog.Value { return slog.StringValue(s.String()) }

// mechanism is the SASL mechanism of every connection: nil without SASL.
func (s SASL) mechanism() (fsasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case "":
		return nil, nil
	case MechanismPlain:
		return fplain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case MechanismSCRAMSHA256:
		return fscram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case MechanismSCRAMSHA512:
		return fscram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("SASL mechanism %q is not one of %s, %s, %s",
		s.Mechanism, MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512)
}

// Rebalance protocols of Options.Rebalance.
const (
	// RebalanceCooperative moves only the partitions that change owner:
	// the others keep being consumed through a rebalance (KIP-429, the
	// cooperative-sticky assignor).
	RebalanceCooperative = "cooperative"
	// RebalanceEager stops every member's every partition on each
	// rebalance and assigns them afresh (the range assignor), as clients
	// without cooperative rebalancing do; a group mixing both kinds of
	// members needs every member on eager first.
	RebalanceEager = "eager"
)

// Acknowledgement levels of Options.Acks.
const (
	// AcksAll: a write is acknowledged once every in-sync replica has it,
	// and refused while fewer than min.insync.replicas are in sync. With
	// a replication factor of 3 and min.insync.replicas=2, a confirmed
	// message survives the loss of any one broker.
	AcksAll = "all"
	// AcksLeader: a write is acknowledged once the partition leader has
	// appended it, before any follower has it. A leader that is cut off
	// from its followers goes on acknowledging, and what it acknowledged
	// after the cut is truncated away when it rejoins under the new
	// leader: confirmed messages are lost. Faster, and only for data that
	// may be lost; it turns off idempotent writes, which need AcksAll.
	AcksLeader = "leader"
)

// Options configure a Client. Only Brokers is required; every other field
// has the default its comment states.
type Options struct {
	// Brokers are the bootstrap addresses, "host:port". Required.
	Brokers []string
	// ClientID names the client to the brokers (logs, quotas).
	// Default "omnibus".
	ClientID string
	// DialTimeout bounds connecting to a broker, TLS and SASL included.
	// New fails with bus.ErrUnreachable when no broker answers within it.
	// Default 10s.
	DialTimeout time.Duration
	// TLS turns on TLS with this configuration. Default nil: plaintext.
	TLS *tls.Config
	// SASL authenticates every connection. Default: no SASL.
	SASL SASL

	// Partitions is the partition count of topics created on first use.
	// Default 3.
	Partitions int
	// ReplicationFactor of topics created on first use (the topics
	// published to, and the retry and dead-letter topics). Default -1: the
	// broker's default.replication.factor.
	ReplicationFactor int
	// MinInsyncReplicas is the min.insync.replicas of topics created on
	// first use: with acks=all, a write is acknowledged once that many
	// replicas have it, and refused while fewer are in sync. Default 0:
	// the broker's setting.
	MinInsyncReplicas int
	// NoTopicCreation turns off creating missing topics: Publish and
	// Subscribe then fail with ErrNoTopic, after asking the brokers again
	// for about 1.5 s (a topic created a moment ago reaches every broker's
	// metadata a little later). Retry topics must then be created by hand
	// too (see RetryTopic). Default false.
	NoTopicCreation bool

	// MaxMessageSize is the largest bus.Message.Size that Publish accepts.
	// Set it 16 KiB below the broker's message.max.bytes (and the topics'
	// max.message.bytes) when those are raised. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// BatchTimeout is how long a partition's batch may wait for more
	// records before it is sent (franz-go's linger). Publish does not
	// wait for it: once its records are buffered, their partitions' batches
	// go. It holds back only records buffered before the producer knows
	// their topic's partitions. Default 1ms.
	BatchTimeout time.Duration
	// BatchSize is accepted for compatibility and has no effect: batches
	// are bounded in bytes, by the broker's limit that MaxMessageSize
	// implies, not in messages.
	BatchSize int
	// Compression of produced batches: "none", "gzip", "snappy", "lz4" or
	// "zstd". A batch that does not shrink is sent uncompressed. Every
	// Kafka client decodes snappy; zstd needs Kafka 2.1 and consumers that
	// know it. Default "snappy", as franz-go's.
	Compression string
	// Acks is when a write counts as acknowledged: AcksAll or
	// AcksLeader. Default AcksAll.
	Acks string
	// WriteTimeout bounds each produce request and admin request. The
	// producer gives up on a record not acknowledged within three times
	// WriteTimeout, retries included (unless a request carrying it is in
	// flight, whose answer it waits for). Default 10s.
	WriteTimeout time.Duration

	// SessionTimeout is how long the group coordinator waits for a
	// heartbeat before it declares a member dead and hands its partitions
	// to the others; it bounds how late the deliveries of a crashed
	// process come back. The broker accepts 6s to 30m unless configured
	// otherwise. Default 10s.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often a member checks in with the
	// coordinator, and so how quickly it notices a rebalance. Default 1s.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long the coordinator waits for every member
	// to rejoin during a rebalance. Default 30s.
	RebalanceTimeout time.Duration
	// JoinBackoff is accepted for compatibility and has no effect:
	// franz-go backs off between failed joins by itself.
	JoinBackoff time.Duration
	// Rebalance is the group's rebalance protocol: RebalanceCooperative
	// or RebalanceEager. Default RebalanceCooperative.
	Rebalance string
	// InstanceID, when set, makes every subscription of the Client a
	// static member of its group (KIP-345), with group.instance.id
	// "<InstanceID>-<digest of the group ID>". At most 200 letters,
	// digits, '.', '_' and '-'. A member that restarts within
	// SessionTimeout under the same InstanceID gets its partitions back
	// without a rebalance, and a member that closes does not leave the
	// group (its partitions wait for it until SessionTimeout passes).
	// Each process needs an InstanceID of its own. Default "": dynamic
	// members, which leave the group when they close.
	InstanceID string
	// CommitInterval is how often processed offsets are committed. A crash
	// redelivers at most this much work that was already acknowledged.
	// Default 1s.
	CommitInterval time.Duration
	// DrainTimeout is how long a member losing partitions in a rebalance
	// waits for their in-flight deliveries to be settled before giving
	// them back; it must be below RebalanceTimeout. Default 10s.
	DrainTimeout time.Duration
	// MetadataMaxAge is how often every client of the Client refreshes
	// what it knows of the cluster: partitions added to a topic are
	// produced to and consumed (the group rebalances) at the latest this
	// long after they appear. Default 30s.
	MetadataMaxAge time.Duration
	// FetchMaxWait is the longest a fetch waits for new messages; it also
	// bounds how long closing a subscription waits for its fetches.
	// Default 500ms.
	FetchMaxWait time.Duration
	// RetryLookahead is how many records a partition holds back while
	// they wait: in a retry topic until they are due, so that a long delay
	// does not hold back shorter ones queued after it; with BlockingRetry,
	// behind a failed record of their key. A partition with that many
	// waiting stops reading. Default 1000.
	RetryLookahead int
	// BlockingRetry retries a failed message in place: its partition
	// delivers it again after the delay, and later messages with the same
	// key wait until it succeeds or is dead-lettered, so the order of a
	// key holds across failures; other keys go on. The partition's offset
	// is not committed past a waiting message, so a crash during a long
	// delay redelivers what came after it. Default false: failed messages
	// go through the group's retry topic and the partition moves on.
	BlockingRetry bool
	// GroupID maps an omnibus topic and group to a Kafka consumer group
	// ID. Default DefaultGroupID.
	GroupID func(topic, group string) string
	// Logger receives failures this package recovers from, and franz-go's
	// warnings and errors at debug level. Default slog.Default().
	Logger *slog.Logger
}

// DefaultGroupID is the Kafka consumer group of an omnibus topic and group:
// "<topic>.<group>". Kafka groups span topics, so giving each topic its own
// group keeps a member joining on one topic from rebalancing the
// subscriptions of every other topic with the same group name.
func DefaultGroupID(topic, group string) string { return topic + "." + group }

// RetryTopic is the topic that holds the retries of a group:
// "<topic>.retry.<group>". Each group has its own, so that one group's
// failures never reach another.
func RetryTopic(topic, group string) string { return topic + ".retry." + group }

// Validate reports every problem of the options at once, as a
// *bus.ConfigError.
func (o Options) Validate() error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	if len(o.Brokers) == 0 {
		add("Brokers is empty")
	}
	for _, b := range o.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			add("broker address %q is not host:port", b)
		}
	}
	for name, d := range map[string]time.Duration{
		"DialTimeout": o.DialTimeout, "BatchTimeout": o.BatchTimeout, "WriteTimeout": o.WriteTimeout,
		"SessionTimeout": o.SessionTimeout, "HeartbeatInterval": o.HeartbeatInterval,
		"RebalanceTimeout": o.RebalanceTimeout, "JoinBackoff": o.JoinBackoff,
		"CommitInterval": o.CommitInterval, "DrainTimeout": o.DrainTimeout, "FetchMaxWait": o.FetchMaxWait,
		"MetadataMaxAge": o.MetadataMaxAge,
	} {
		if d < 0 {
			add("%s %v is negative", name, d)
		}
	}
	if o.Partitions < 0 {
		add("Partitions %d is negative", o.Partitions)
	}
	if o.ReplicationFactor < -1 || o.ReplicationFactor > 32767 {
		add("ReplicationFactor %d: want -1 (the broker's default) to 32767", o.ReplicationFactor)
	}
	if o.MinInsyncReplicas < 0 {
		add("MinInsyncReplicas %d is negative", o.MinInsyncReplicas)
	}
	if len(o.InstanceID) > 200 || strings.Trim(o.InstanceID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		add("InstanceID %q: want at most 200 letters, digits, '.', '_' and '-'", o.InstanceID)
	}
	switch o.Acks {
	case "", AcksAll, AcksLeader:
	default:
		add("Acks %q is not %q or %q", o.Acks, AcksAll, AcksLeader)
	}
	switch o.Rebalance {
	case "", RebalanceCooperative, RebalanceEager:
	default:
		add("Rebalance %q is not %q or %q", o.Rebalance, RebalanceCooperative, RebalanceEager)
	}
	if o.MaxMessageSize < 0 {
		add("MaxMessageSize %d is negative", o.MaxMessageSize)
	}
	if o.BatchSize < 0 {
		add("BatchSize %d is negative", o.BatchSize)
	}
	if o.RetryLookahead < 0 {
		add("RetryLookahead %d is negative", o.RetryLookahead)
	}
	if _, err := compression(o.Compression); err != nil {
		p = append(p, err)
	}
	if _, err := o.SASL.mechanism(); err != nil {
		p = append(p, err)
	} else if o.SASL.Mechanism != "" && o.SASL.Username == "" {
		add("SASL %s needs a username", o.SASL.Mechanism)
	}
	d := o.withDefaults()
	if d.HeartbeatInterval >= d.SessionTimeout {
		add("HeartbeatInterval %v must be below SessionTimeout %v", d.HeartbeatInterval, d.SessionTimeout)
	}
	if d.DrainTimeout >= d.RebalanceTimeout {
		add("DrainTimeout %v must be below RebalanceTimeout %v", d.DrainTimeout, d.RebalanceTimeout)
	}
	if len(p) == 0 {
		return nil
	}
	return &bus.ConfigError{Problems: p}
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.ClientID == "" {
		o.ClientID = "omnibus"
	}
	def(&o.DialTimeout, 10*time.Second)
	if o.Partitions == 0 {
		o.Partitions = 3
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	def(&o.BatchTimeout, time.Millisecond)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.SessionTimeout, 10*time.Second)
	def(&o.HeartbeatInterval, time.Second)
	def(&o.RebalanceTimeout, 30*time.Second)
	def(&o.JoinBackoff, time.Second)
	def(&o.CommitInterval, time.Second)
	def(&o.DrainTimeout, 10*time.Second)
	def(&o.FetchMaxWait, 500*time.Millisecond)
	def(&o.MetadataMaxAge, 30*time.Second)
	if o.RetryLookahead == 0 {
		o.RetryLookahead = 1000
	}
	if o.GroupID == nil {
		o.GroupID = DefaultGroupID
	}
	if o.Acks == "" {
		o.Acks = AcksAll
	}
	if o.Rebalance == "" {
		o.Rebalance = RebalanceCooperative
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// batchBytes is the produce batch limit: the broker's limit implied by
// MaxMessageSize, less a margin.
func (o Options) batchBytes() int32 { return int32(min(o.MaxMessageSize+headroom-1<<10, 1<<30)) }

// compression is the producer's codec for a Compression name.
func compression(name string) (franz.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "", "snappy":
		return franz.SnappyCompression(), nil
	case "none":
		return franz.NoCompression(), nil
	case "gzip":
		return franz.GzipCompression(), nil
	case "lz4":
		return franz.Lz4Compression(), nil
	case "zstd":
		return franz.ZstdCompression(), nil
	}
	return franz.NoCompression(), fmt.Errorf("compression %q is not one of none, gzip, snappy, lz4, zstd", name)
}

// franzLogger passes franz-go's warnings and errors to slog at debug
// level: franz-go reports there what it retries by itself.
type franzLogger struct{ l *slog.Logger }

func (p franzLogger) Level() franz.LogLevel {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		return franz.LogLevelWarn
	}
	return franz.LogLevelNone
}

func (p franzLogger) Log(level franz.LogLevel, msg string, keyvals ...any) {
	p.l.Debug("franz-go: "+msg, append([]any{"component", "franz-go", "level", level.String()}, keyvals...)...)
}
