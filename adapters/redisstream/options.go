package redisstream

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// Defaults of Options.
const (
	DefaultAddr              = "localhost:6379"
	DefaultMaxMessageSize    = 1 << 20
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultClaimInterval     = time.Second
	DefaultDialTimeout       = 5 * time.Second
	DefaultReadTimeout       = 5 * time.Second
	DefaultWaitTimeout       = time.Second
)

// MaxMessageSizeLimit is the largest Options.MaxMessageSize allowed. Redis
// refuses bulk strings over 512 MB (proto-max-bulk-len), and a delayed
// retry stores the whole message as one string in a sorted set.
const MaxMessageSizeLimit = 256 << 20

// Options configure a Broker. The zero value connects to DefaultAddr with
// every default.
type Options struct {
	// Addr is the server's host:port. Default DefaultAddr. Unused with
	// Cluster or MasterName, which take Addrs.
	Addr string
	// Cluster makes the Broker a client of a Redis Cluster whose seed
	// nodes are Addrs (see the package documentation, Redis Cluster).
	Cluster bool
	// MasterName makes the Broker a client of the master of that name,
	// found and followed through the Sentinels at Addrs.
	MasterName string
	// Addrs are the seed nodes of a cluster (Cluster) or the Sentinels
	// (MasterName), each host:port.
	Addrs []string
	// SentinelPassword authenticates with the Sentinels when they have a
	// requirepass of their own. Default: none.
	SentinelPassword string
	// WaitReplicas, when positive, makes Publish return only once that
	// many replicas have the messages: it sends WAIT after the XADDs, on
	// the same connection, and fails with ErrNotReplicated when fewer
	// replicas acknowledged within WaitTimeout. Default 0: Publish returns
	// once the master has them.
	WaitReplicas int
	// WaitTimeout bounds the wait for WaitReplicas. Default
	// DefaultWaitTimeout.
	WaitTimeout time.Duration
	// Username and Password authenticate with AUTH (Redis ACL). An empty
	// Username with a Password authenticates as the default user.
	// Default: no authentication.
	Username, Password string
	// DB is the database number. Default 0.
	DB int
	// TLS, when set, makes every connection use TLS with this config.
	// Default nil: plain TCP.
	TLS *tls.Config
	// DialTimeout bounds connecting, including New's first round trip.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout bounds each command's reply (blocking reads get their
	// block time on top). Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// PoolSize is the most connections the Broker keeps for publishing and
	// settling; each subscription has one more of its own. Default: the
	// go-redis default, 10 per GOMAXPROCS.
	PoolSize int
	// MaxMessageSize is the largest bus.Message.Size that Publish accepts,
	// in bytes, at most MaxMessageSizeLimit. Default DefaultMaxMessageSize.
	MaxMessageSize int
	// VisibilityTimeout is how long a delivery may sit unrenewed in a
	// consumer's pending list before other consumers of its group claim
	// it. Live subscriptions renew what they hold every third of it, so it
	// bounds how long a dead consumer's work waits, not how long a handler
	// may run. Default DefaultVisibilityTimeout.
	VisibilityTimeout time.Duration
	// ClaimInterval is how often a subscription looks for deliveries that
	// are claimable: idle past VisibilityTimeout, or given back by a
	// closed subscription. Default DefaultClaimInterval.
	ClaimInterval time.Duration
	// TrimInterval, when positive, makes every subscription run Trim on
	// its topic that often. Default 0: streams are never trimmed.
	TrimInterval time.Duration
	// Logger receives errors of the background work (fetching, renewing,
	// trimming), which is retried. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Addr == "" && !o.Cluster && o.MasterName == "" {
		o.Addr = DefaultAddr
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.ClaimInterval == 0 {
		o.ClaimInterval = DefaultClaimInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports every problem of the options at once, as a
// *bus.ConfigError.
func (o Options) Validate() error {
	var p []error
	add := func(format string, args ...any) { p = append(p, fmt.Errorf(format, args...)) }
	redisconn.CheckAddr(o.Addr, o.DB, add)
	for _, a := range o.Addrs {
		redisconn.CheckAddr(a, 0, add)
	}
	switch {
	case o.Cluster && o.MasterName != "":
		add("Cluster and MasterName: a Redis Cluster is not behind Sentinel; set one")
	case o.Cluster || o.MasterName != "":
		if len(o.Addrs) == 0 {
			add("Addrs is empty: a cluster needs its seed nodes, Sentinel its sentinels")
		}
		if o.Addr != "" {
			add("Addr %q with Cluster or MasterName: put the addresses in Addrs", o.Addr)
		}
		if o.Cluster && o.DB != 0 {
			add("DB %d: a Redis Cluster has only database 0", o.DB)
		}
	case len(o.Addrs) > 0:
		add("Addrs without Cluster or MasterName: a standalone server takes Addr")
	}
	if o.SentinelPassword != "" && o.MasterName == "" {
		add("SentinelPassword without MasterName")
	}
	if o.WaitReplicas < 0 {
		add("WaitReplicas %d is negative", o.WaitReplicas)
	}
	if o.WaitTimeout < 0 || (o.WaitTimeout > 0 && o.WaitTimeout < time.Millisecond) {
		add("WaitTimeout %v: want at least 1ms", o.WaitTimeout)
	}
	if o.DialTimeout < 0 {
		add("DialTimeout %v is negative", o.DialTimeout)
	}
	if o.ReadTimeout < 0 {
		add("ReadTimeout %v is negative", o.ReadTimeout)
	}
	if o.PoolSize < 0 {
		add("PoolSize %d is negative", o.PoolSize)
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > MaxMessageSizeLimit {
		add("MaxMessageSize %d: want 1 to %d bytes", o.MaxMessageSize, MaxMessageSizeLimit)
	}
	if o.VisibilityTimeout != 0 && (o.VisibilityTimeout < 30*time.Millisecond || o.VisibilityTimeout > 7*24*time.Hour) {
		add("VisibilityTimeout %v: want 30ms to 7 days", o.VisibilityTimeout)
	}
	if o.ClaimInterval != 0 && o.ClaimInterval < 10*time.Millisecond {
		add("ClaimInterval %v: want at least 10ms", o.ClaimInterval)
	}
	if o.TrimInterval < 0 {
		add("TrimInterval %v is negative", o.TrimInterval)
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// Schemes of the URLs this package opens: redis:// over TCP and rediss://
// over TLS; with "+cluster" a Redis Cluster, with "+sentinel" a master
// behind Sentinel.
const (
	Scheme            = "redis"
	SchemeTLS         = "rediss"
	SchemeCluster     = Scheme + redisconn.ClusterSuffix
	SchemeClusterTLS  = SchemeTLS + redisconn.ClusterSuffix
	SchemeSentinel    = Scheme + redisconn.SentinelSuffix
	SchemeSentinelTLS = SchemeTLS + redisconn.SentinelSuffix
)

// ParseURL returns the Options of a redis:// or rediss:// URL, or of their
// cluster and Sentinel forms:
//
//	redis://[[user]:password@]host[:port][/db][?param=value&...]
//	redis+cluster://[[user]:password@]host[:port],host[:port]...[/][?...]
//	redis+sentinel://[[user]:password@]sentinel[:port],...[/master[/db]][?...]
//
// The port defaults to 6379 (26379 for Sentinels) and db to 0; rediss:// turns on TLS with the
// system's roots, verifying host (the first host of a list unless
// tls_server_name says otherwise). A cluster's hosts are seed nodes: the
// client learns the others from them. Sentinel's hosts are the Sentinels,
// the user info is the master's. Query parameters (durations in Go syntax,
// such as 30s or 500ms):
//
//	wait                replicas Publish waits for (WaitReplicas); default 0
//	wait_timeout        default DefaultWaitTimeout
//	sentinel_password   the Sentinels' own password, with +sentinel
//	max_message_size    bytes; default DefaultMaxMessageSize
//	visibility_timeout  default DefaultVisibilityTimeout
//	claim_interval      default DefaultClaimInterval
//	trim_interval       default 0 (never trim)
//	dial_timeout        default DefaultDialTimeout
//	read_timeout        default DefaultReadTimeout
//	pool_size           default: go-redis's
//
// and, with rediss://, the TLS parameters every backend shares (see
// driver.Params): tls_ca, tls_cert, tls_key, tls_server_name,
// tls_skip_verify.
//
// Errors match bus.ErrBadURL, list every problem, and never contain the
// password.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	p := driver.NewParams(u)
	e := redisconn.Parse(u, Scheme, SchemeTLS, p)
	o.Addr, o.Username, o.Password, o.DB, o.TLS = e.Addr, e.Username, e.Password, e.DB, e.TLS
	o.Cluster, o.MasterName, o.SentinelPassword = e.Mode == redisconn.Cluster, e.MasterName, e.SentinelPassword
	if o.Cluster || o.MasterName != "" { // else Parse reported the missing master name
		o.Addrs = e.Addrs
	}
	p.Int(&o.WaitReplicas, "wait", 0)
	p.Duration(&o.WaitTimeout, "wait_timeout")
	p.Int(&o.MaxMessageSize, "max_message_size", 1)
	p.Duration(&o.VisibilityTimeout, "visibility_timeout")
	p.Duration(&o.ClaimInterval, "claim_interval")
	p.Duration(&o.TrimInterval, "trim_interval")
	p.Duration(&o.DialTimeout, "dial_timeout")
	p.Duration(&o.ReadTimeout, "read_timeout")
	p.Int(&o.PoolSize, "pool_size", 1)
	if err := p.Err(driver.ConfigProblems(o.Validate())...); err != nil {
		return Options{}, err
	}
	return o, nil
}

// String describes the options with the password replaced by "xxxxx", so
// that printing or logging Options never reveals it.
func (o Options) String() string {
	type fields Options // without the methods, for %+v
	c := o
	if c.Password != "" {
		c.Password = "xxxxx"
	}
	if c.SentinelPassword != "" {
		c.SentinelPassword = "xxxxx"
	}
	return fmt.Sprintf("%+v", fields(c))
}

// GoString keeps %#v from printing the password.
func (o Options) GoString() string { return "redisstream.Options" + o.String() }

// LogValue keeps slog from printing the password.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }
