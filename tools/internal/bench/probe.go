package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	kafka "github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/adapters/redisstream"
	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// Target is a broker to benchmark.
type Target struct {
	// Name labels the broker in reports, e.g. "rabbitmq".
	Name string
	// URL is what bus.Open is given.
	URL string
	// Open, when set, connects to URL in place of the suite's Open: a
	// comparison runs the same workload through other clients of the same
	// broker this way.
	Open func(ctx context.Context, url string) (bus.Broker, error) `json:"-"`
	// Cleanup, when set, replaces Cleanup for this target's topics.
	Cleanup func(ctx context.Context, url, topic, group string) error `json:"-"`
	// Client, when set, describes the code that Open speaks through, in
	// place of the adapter Probe infers from the URL's scheme.
	Client *Client `json:"-"`
}

// BrokerInfo records what a benchmark ran against: the broker, the client
// that spoke to it, and what an acknowledged publish meant there.
type BrokerInfo struct {
	Target string `json:"target"`
	// URL has its password redacted.
	URL     string `json:"url"`
	Product string `json:"product"`
	// Version is "unknown" when the broker does not say; VersionSource
	// says where it was read or inferred from.
	Version       string     `json:"version"`
	VersionSource string     `json:"version_source,omitempty"`
	Client        Client     `json:"client"`
	Durability    Durability `json:"durability"`
	// Features are what the backend reports of itself, when it does.
	Features *bus.Features `json:"features,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
}

// Client names the code on the benchmark's side of the wire.
type Client struct {
	Adapter        string `json:"adapter"`
	OmnibusVersion string `json:"omnibus_version"`
	Library        string `json:"library,omitempty"`
	LibraryVersion string `json:"library_version,omitempty"`
}

// Durability says what a successful Publish meant on the broker: the
// acknowledgement rule and the settings that decide when data reaches
// disk.
type Durability struct {
	Summary  string            `json:"summary"`
	Settings map[string]string `json:"settings,omitempty"`
}

const unknown = "unknown"

// Probe describes the broker behind t.URL: product and version as the
// broker reports them, the client library linked into this binary, and
// the durability settings from the URL, the adapter's documented
// defaults and, where the broker answers, its own configuration. It reads
// over a connection of its own and never fails: what it cannot learn it
// reports as unknown, with the reason in Notes.
func Probe(ctx context.Context, t Target) BrokerInfo {
	info := BrokerInfo{Target: t.Name, URL: RedactText(t.URL), Product: unknown, Version: unknown,
		Client: Client{OmnibusVersion: ModuleVersion(ModulePath)}}
	u, err := bus.ParseURL(t.URL)
	if err != nil {
		info.Notes = append(info.Notes, err.Error())
		return info
	}
	info.URL = u.Redacted()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch u.Scheme {
	case "mem":
		probeMemory(&info)
	case "amqp", "amqps":
		probeRabbitMQ(ctx, u, &info)
	case "redis", "rediss", redisstream.SchemeCluster, redisstream.SchemeClusterTLS, redisstream.SchemeSentinel, redisstream.SchemeSentinelTLS:
		probeRedis(ctx, u, &info)
	case "kafka":
		probeKafka(ctx, u, &info)
	case "rocketmq":
		probeRocketMQ(ctx, u, &info)
	default:
		info.Client.Adapter = u.Scheme + " (adapter not known to bench)"
		info.Durability.Summary = unknown
		info.Notes = append(info.Notes, "bench knows no probe for the "+u.Scheme+" scheme")
	}
	if t.Client != nil {
		c := *t.Client
		c.OmnibusVersion = info.Client.OmnibusVersion
		info.Client = c
	}
	return info
}

func probeMemory(info *BrokerInfo) {
	info.Product = "omnibus in-process broker"
	info.Version = ModuleVersion(ModulePath)
	info.VersionSource = "omnibus build"
	info.Client.Adapter = "adapters/memory"
	info.Durability = Durability{
		Summary:  "none: messages live in the process's memory and are lost with it",
		Settings: map[string]string{"persistent": "false"},
	}
}

// amqpParams are the query parameters of the rabbitmq adapter that bear
// on durability and throughput, with the adapter's defaults.
var amqpParams = map[string]string{
	"queue_type":       "classic",
	"topology":         "exchange",
	"publish_channels": "2",
	"confirm_window":   "1024",
}

func probeRabbitMQ(ctx context.Context, u *url.URL, info *BrokerInfo) {
	info.Product = "RabbitMQ"
	info.Client = Client{Adapter: "adapters/rabbitmq", OmnibusVersion: info.Client.OmnibusVersion,
		Library: "github.com/rabbitmq/amqp091-go", LibraryVersion: ModuleVersion("github.com/rabbitmq/amqp091-go")}
	set := map[string]string{"publisher_confirms": "true", "delivery_mode": "persistent", "queue_durable": "true"}
	q := u.Query()
	for k, def := range amqpParams {
		set[k] = def + " (adapter default)"
		if q.Has(k) {
			set[k] = q.Get(k)
		}
	}
	qt := strings.Fields(set["queue_type"])[0]
	switch qt {
	case "quorum":
		info.Durability.Summary = "publisher confirms, persistent messages, durable quorum queue: " +
			"confirmed once a majority of the queue's replicas have written it to disk (fsync)"
	default:
		info.Durability.Summary = "publisher confirms, persistent messages, durable classic queue: " +
			"confirmed once written to disk (RabbitMQ batches the fsyncs) or delivered and acked"
	}
	info.Durability.Settings = set
	hosts := strings.Split(u.Host, ",")
	if len(hosts) > 1 {
		set["nodes"] = fmt.Sprintf("%d in the URL", len(hosts))
	}

	// The server names its product and version in connection.start.
	conn, err := dialAMQP(ctx, u, "omnibus bench probe")
	if err != nil {
		info.Notes = append(info.Notes, "version probe: "+redactErr(err, u))
		return
	}
	defer conn.Close()
	if v, ok := conn.Properties["version"].(string); ok && v != "" {
		info.Version, info.VersionSource = v, "AMQP server properties"
	}
	if p, ok := conn.Properties["product"].(string); ok && p != "" {
		info.Product = p
	}
	if c, ok := conn.Properties["cluster_name"].(string); ok && c != "" {
		set["cluster_name"] = c
	}
}

// dialAMQP connects to the first host of u's host list that answers.
func dialAMQP(ctx context.Context, u *url.URL, name string) (*amqp.Connection, error) {
	var errs []error
	for h := range strings.SplitSeq(u.Host, ",") {
		one := *u
		one.Host = h
		conn, err := amqp.DialConfig(one.String(), amqp.Config{Dial: dialCtx(ctx), Properties: amqp.Table{"connection_name": name}})
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// dialCtx bounds a client's dial by ctx's deadline.
func dialCtx(ctx context.Context) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// redisEndpoint reads a redis:// URL, or its cluster and Sentinel forms,
// as adapters/redisstream does, and the replicas its Publish waits for.
func redisEndpoint(u *url.URL) (redisconn.Endpoint, int, error) {
	p := driver.NewParams(u)
	e := redisconn.Parse(u, redisstream.Scheme, redisstream.SchemeTLS, p)
	var wait int
	p.Int(&wait, "wait", 0)
	p.Rest() // the adapter's own parameters
	return e, wait, p.Err()
}

func probeRedis(ctx context.Context, u *url.URL, info *BrokerInfo) {
	info.Product = "Redis"
	info.Client = Client{Adapter: "adapters/redisstream", OmnibusVersion: info.Client.OmnibusVersion,
		Library: "github.com/redis/go-redis/v9", LibraryVersion: ModuleVersion("github.com/redis/go-redis/v9")}
	set := map[string]string{}
	info.Durability.Settings = set
	info.Durability.Summary = "XADD acknowledged by the server; disk policy unknown"
	e, wait, err := redisEndpoint(u)
	if err != nil {
		info.Notes = append(info.Notes, redactErr(err, u))
		return
	}
	set["mode"] = e.Mode.String()
	set["ack"] = "XADD reply from the master (no WAIT)"
	if wait > 0 {
		set["ack"] = fmt.Sprintf("XADD, then WAIT %d: the master and %s have it", wait, replicas(wait))
	}
	c := redisconn.NewClient(e, 5*time.Second, 5*time.Second, 2, 0)
	defer c.Close()
	srv, err := redisconn.Probe(ctx, c, e, 5*time.Second, "bench")
	if err != nil {
		info.Notes = append(info.Notes, "probe: "+redactErr(err, u))
		return
	}
	if srv.Version != "" {
		info.Product, info.Version, info.VersionSource = srv.Product, srv.Version, "INFO server"
	}
	if srv.Mode != "" && e.Mode != redisconn.Sentinel {
		set["mode"] = srv.Mode
	}
	if e.Mode == redisconn.Cluster {
		set["masters"] = strconv.Itoa(srv.Masters)
	}
	if srv.Replicas >= 0 {
		set["replicas"] = strconv.Itoa(srv.Replicas) + " per master (fewest)"
	}
	if srv.MinReplicasToWrite >= 0 {
		set["min-replicas-to-write"] = strconv.Itoa(srv.MinReplicasToWrite)
	}
	if srv.Fsync != "" {
		set["appendonly"], set["appendfsync"] = "yes", srv.Fsync
	} else {
		set["appendonly"] = "no or unknown (CONFIG GET refused)"
	}
	disk := "no AOF (or CONFIG refused): a restart keeps only what the last RDB snapshot had"
	switch srv.Fsync {
	case "always":
		disk = "the AOF write is fsynced before the reply (appendfsync always)"
	case "everysec":
		disk = "the AOF is fsynced every second (appendfsync everysec): a machine crash can lose about the last second"
	case "":
	default:
		disk = "the OS decides when the AOF reaches disk (appendfsync " + srv.Fsync + ")"
	}
	who := "XADD acknowledged by the master from memory"
	if wait > 0 {
		who = fmt.Sprintf("XADD acknowledged once the master and %s have it in memory (WAIT %d)", replicas(wait), wait)
	} else if srv.Replicas > 0 {
		who += fmt.Sprintf(", replicated asynchronously to %s: a failover can lose what they had not received", replicas(srv.Replicas))
	}
	info.Durability.Summary = who + "; " + disk
}

func replicas(n int) string {
	if n == 1 {
		return "1 replica"
	}
	return strconv.Itoa(n) + " replicas"
}

// kafkaAddrs lists the bootstrap addresses of a kafka:// URL as the
// adapter reads them: the host list plus the brokers parameter.
func kafkaAddrs(u *url.URL) []string {
	var addrs []string
	for _, list := range []string{u.Host, u.Query().Get("brokers")} {
		for _, h := range strings.Split(list, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(h); err != nil {
				h = net.JoinHostPort(strings.Trim(h, "[]"), "9092")
			}
			addrs = append(addrs, h)
		}
	}
	return addrs
}

func probeKafka(ctx context.Context, u *url.URL, info *BrokerInfo) {
	info.Product = "Apache Kafka"
	info.Client = Client{Adapter: "adapters/kafka", OmnibusVersion: info.Client.OmnibusVersion,
		// The adapter does everything with franz-go.
		Library:        "github.com/twmb/franz-go",
		LibraryVersion: ModuleVersion("github.com/twmb/franz-go")}
	q := u.Query()
	set := map[string]string{"acks": "all (set by the adapter)", "batch_timeout": "1ms (adapter default, the producer's linger)",
		"idempotence": "on (adapter default)", "compression": "snappy (adapter default)"}
	for _, k := range []string{"batch_timeout", "batch_size", "compression", "replication_factor", "partitions"} {
		if q.Has(k) {
			set[k] = q.Get(k)
		}
	}
	info.Durability.Settings = set
	info.Durability.Summary = "acks=all: acknowledged once every in-sync replica has the record; broker flush policy unknown"
	if q.Has("tls") || q.Has("tls_ca") || q.Has("sasl") {
		info.Notes = append(info.Notes, "version probe skipped: it speaks plain, unauthenticated Kafka only")
		return
	}
	c := &kafka.Client{Addr: kafka.TCP(kafkaAddrs(u)...), Timeout: 5 * time.Second}

	// Kafka does not tell clients its release; the protocol versions it
	// serves bound it. 4.0 removed Fetch v0-v3 (KIP-896).
	if av, err := c.ApiVersions(ctx, &kafka.ApiVersionsRequest{}); err != nil {
		info.Notes = append(info.Notes, "ApiVersions: "+redactErr(err, u))
	} else {
		var produce, fetch string
		for _, k := range av.ApiKeys {
			switch k.ApiName {
			case "Produce":
				produce = fmt.Sprintf("v%d-v%d", k.MinVersion, k.MaxVersion)
			case "Fetch":
				fetch = fmt.Sprintf("v%d-v%d", k.MinVersion, k.MaxVersion)
				if k.MinVersion >= 4 {
					info.Version = "4.0 or later (inferred)"
				} else {
					info.Version = "before 4.0 (inferred)"
				}
			}
		}
		info.VersionSource = fmt.Sprintf("ApiVersions (%d APIs, Produce %s, Fetch %s; 4.0 dropped Fetch v0-v3): "+
			"Kafka reports no release number", len(av.ApiKeys), produce, fetch)
	}

	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}})
	if err != nil {
		info.Notes = append(info.Notes, "Metadata: "+redactErr(err, u))
		return
	}
	set["brokers"] = strconv.Itoa(len(md.Brokers))
	names := []string{"min.insync.replicas", "default.replication.factor", "log.flush.interval.messages",
		"log.flush.interval.ms", "unclean.leader.election.enable"}
	dc, err := c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeBroker, ResourceName: strconv.Itoa(md.Controller.ID), ConfigNames: names}}})
	if err != nil {
		info.Notes = append(info.Notes, "DescribeConfigs: "+redactErr(err, u))
		return
	}
	cfg := map[string]string{}
	for _, r := range dc.Resources {
		for _, e := range r.ConfigEntries {
			if slices.Contains(names, e.ConfigName) {
				cfg[e.ConfigName] = e.ConfigValue
				set[e.ConfigName] = orUnset(e.ConfigValue)
			}
		}
	}
	flush := "the broker fsyncs every " + cfg["log.flush.interval.messages"] + " messages"
	if n, err := strconv.ParseInt(cfg["log.flush.interval.messages"], 10, 64); err == nil && n == math.MaxInt64 && cfg["log.flush.interval.ms"] == "" {
		flush = "the OS decides when the log reaches disk (no log.flush.interval): acknowledged before fsync"
	} else if err == nil && n == math.MaxInt64 {
		flush = "fsync every " + cfg["log.flush.interval.ms"] + " ms: acknowledged before fsync"
	}
	info.Durability.Summary = fmt.Sprintf("acks=all: acknowledged once every in-sync replica has the record "+
		"(%d broker(s), min.insync.replicas=%s); %s", len(md.Brokers), cfg["min.insync.replicas"], flush)
}

func orUnset(v string) string {
	if v == "" {
		return "(empty)"
	}
	return v
}

// userinfo matches the user and password of a URL within any text, up to
// the last "@" before the host, as url.Parse reads it.
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*):[^/?#\s]*@`)

// RedactText replaces the password of every URL in s with "xxxxx", whether
// or not the URL parses: a URL that url.Parse refuses is shown as it was
// given, and its password must not be.
func RedactText(s string) string { return userinfo.ReplaceAllString(s, "${1}:xxxxx@") }

// redactErr keeps a URL's password out of an error's text.
func redactErr(err error, u *url.URL) string {
	s := err.Error()
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}

// Cleanup deletes what a run on topic left on the broker behind rawURL:
// the queues and exchange, stream and retry keys, or topics and consumer
// group that the adapters create for a topic and group, by their
// documented names. It is best effort: the names are the adapters'
// layouts, which bench mirrors rather than imports. mem:// needs nothing.
func Cleanup(ctx context.Context, rawURL, topic, group string) error {
	u, err := bus.ParseURL(rawURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch u.Scheme {
	case "amqp", "amqps":
		conn, err := dialAMQP(ctx, u, "omnibus bench cleanup")
		if err != nil {
			return fmt.Errorf("cleanup: %s", redactErr(err, u))
		}
		defer conn.Close()
		// A failed delete closes its channel, so each gets a new one.
		do := func(f func(*amqp.Channel) error) error {
			ch, err := conn.Channel()
			if err != nil {
				return err
			}
			defer ch.Close()
			return f(ch)
		}
		var errs []error
		for _, q := range []string{topic + "." + group, topic} {
			errs = append(errs, do(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err }))
		}
		errs = append(errs, do(func(ch *amqp.Channel) error { return ch.ExchangeDelete(topic, false, false) }))
		for _, e := range errs {
			if e != nil {
				return fmt.Errorf("cleanup: %w", e)
			}
		}
	case "redis", "rediss", redisstream.SchemeCluster, redisstream.SchemeClusterTLS, redisstream.SchemeSentinel, redisstream.SchemeSentinelTLS:
		o, err := redisstream.ParseURL(u)
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		b, err := redisstream.New(ctx, o)
		if err != nil {
			return fmt.Errorf("cleanup: %s", redactErr(err, u))
		}
		defer b.Close()
		if err := b.Remove(ctx, topic, group); err != nil {
			return fmt.Errorf("cleanup: %s", redactErr(err, u))
		}
	case "rocketmq":
		b, err := openRocketMQ(ctx, u)
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		defer b.Close()
		if err := b.Remove(ctx, topic, group); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	case "kafka":
		c := &kafka.Client{Addr: kafka.TCP(kafkaAddrs(u)...), Timeout: 20 * time.Second}
		if _, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{
			Topics: []string{topic, topic + ".retry." + group, topic + ".dlq"}}); err != nil {
			return fmt.Errorf("cleanup: %s", redactErr(err, u))
		}
		if _, err := c.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{topic + "." + group}}); err != nil {
			return fmt.Errorf("cleanup: %s", redactErr(err, u))
		}
	}
	return nil
}

// openRocketMQ connects to the cluster of a rocketmq:// URL. RocketMQ
// speaks its own remoting protocol, for which this module has no client
// library but the adapter's, so the probe and the cleanup use the
// adapter's Describe and Remove.
func openRocketMQ(ctx context.Context, u *url.URL) (*rocketmq.Broker, error) {
	o, err := rocketmq.ParseURL(u)
	if err != nil {
		return nil, err
	}
	return rocketmq.New(ctx, o)
}

func probeRocketMQ(ctx context.Context, u *url.URL, info *BrokerInfo) {
	info.Product = "Apache RocketMQ"
	// No library: the adapter speaks RocketMQ's remoting protocol itself.
	info.Client = Client{Adapter: "adapters/rocketmq", OmnibusVersion: info.Client.OmnibusVersion}
	set := map[string]string{"ack": "SEND_MESSAGE_V2 response from the master broker"}
	info.Durability.Settings = set
	info.Durability.Summary = "send acknowledged by the master broker; flush mode unknown"
	b, err := openRocketMQ(ctx, u)
	if err != nil {
		info.Notes = append(info.Notes, "version probe: "+err.Error())
		return
	}
	defer b.Close()
	ds, err := b.Describe(ctx)
	if err != nil || len(ds) == 0 {
		info.Notes = append(info.Notes, fmt.Sprintf("version probe: %v (%d brokers)", err, len(ds)))
		return
	}
	d := ds[0]
	info.Version, info.VersionSource = strings.TrimPrefix(strings.ReplaceAll(d.Version, "_", "."), "V"), "GET_BROKER_RUNTIME_INFO brokerVersionDesc"
	for _, k := range []string{"flushDiskType", "brokerRole", "inSyncReplicas", "maxMessageSize", "timerWheelEnable", "flushCommitLogTimed", "syncFlushTimeout"} {
		if v, ok := d.Config[k]; ok {
			set[k] = v
		}
	}
	set["masters"] = strconv.Itoa(len(ds))
	if gs, err := b.Cluster(ctx); err == nil {
		slaves := 0
		for _, g := range gs {
			for id := range g.Addrs {
				if id != 0 {
					slaves++
				}
			}
		}
		set["groups"], set["slaves"] = strconv.Itoa(len(gs)), strconv.Itoa(slaves)
	}
	switch d.Config["flushDiskType"] {
	case "SYNC_FLUSH":
		info.Durability.Summary = "send acknowledged once the master broker has flushed the message to disk (flushDiskType=SYNC_FLUSH)"
	case "ASYNC_FLUSH":
		info.Durability.Summary = "send acknowledged from the master broker's page cache; the disk flush follows (flushDiskType=ASYNC_FLUSH): a machine crash can lose the last writes"
	}
	if d.Config["brokerRole"] == "SYNC_MASTER" {
		// RocketMQ 5 waits for inSyncReplicas copies, the master's
		// included: at 1, SYNC_MASTER answers before any slave has it.
		if n, _ := strconv.Atoi(d.Config["inSyncReplicas"]); n >= 2 {
			info.Durability.Summary += fmt.Sprintf("; on %d brokers of its group, the master included, before the acknowledgement (SYNC_MASTER, inSyncReplicas=%d)", n, n)
		} else {
			info.Durability.Summary += "; NOT replicated before the acknowledgement: SYNC_MASTER with inSyncReplicas=" + d.Config["inSyncReplicas"] + " does not wait for a slave"
		}
	}
}
