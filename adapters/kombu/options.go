package kombu

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

// Schemes of the URLs this package opens: kombu+redis:// over TCP,
// kombu+rediss:// over TLS, and kombu+sentinel:// for a master behind
// Sentinel (Celery's sentinel:// broker URLs).
const (
	Scheme         = "kombu+redis"
	SchemeTLS      = "kombu+rediss"
	SchemeSentinel = "kombu+sentinel"
)

// Defaults of Options. DefaultVisibilityTimeout and DefaultRestoreInterval
// are kombu's own defaults (visibility_timeout, unacked_restore_interval).
const (
	DefaultAddr              = "localhost:6379"
	DefaultMaxMessageSize    = 1 << 20
	DefaultVisibilityTimeout = time.Hour
	DefaultRestoreInterval   = 10 * time.Second
	DefaultPollInterval      = time.Second
	DefaultDialTimeout       = 5 * time.Second
	DefaultReadTimeout       = 5 * time.Second
)

// MaxMessageSizeLimit is the largest Options.MaxMessageSize allowed: the
// base64 envelope of a message must stay under Redis's 512 MB strings.
const MaxMessageSizeLimit = 256 << 20

// Options configure a Broker. The zero value connects to DefaultAddr with
// every default.
type Options struct {
	// Addr is the server's host:port. Default DefaultAddr; unused with
	// MasterName.
	Addr string
	// MasterName makes the Broker a client of the master of that name,
	// found and followed through the Sentinels at SentinelAddrs: kombu's
	// master_name transport option.
	MasterName string
	// SentinelAddrs are the Sentinels, each host:port.
	SentinelAddrs []string
	// SentinelPassword authenticates with the Sentinels when they have a
	// requirepass of their own. Default: none.
	SentinelPassword string
	// Username and Password authenticate with AUTH. Default: none.
	Username, Password string
	// DB is the database number, kombu's virtual host. Default 0.
	DB int
	// TLS, when set, makes every connection use TLS with this config.
	TLS *tls.Config
	// KeyPrefix starts every key, as kombu's global_keyprefix transport
	// option does; Celery and Go must use the same one. Default "".
	KeyPrefix string
	// VisibilityTimeout is how long a delivery may stay unacknowledged
	// and unrenewed before a restore puts it back in its queue; kombu's
	// visibility_timeout. Live subscriptions renew what they hold, so it
	// bounds how long the work of a dead consumer waits. Python workers
	// do not renew: keep it at least as long as the longest task they
	// run, and the same as theirs. Default DefaultVisibilityTimeout.
	VisibilityTimeout time.Duration
	// RestoreInterval is how often a Broker with subscriptions looks for
	// deliveries past VisibilityTimeout. Default DefaultRestoreInterval,
	// or VisibilityTimeout/2 when that is shorter.
	RestoreInterval time.Duration
	// PollInterval is the longest an idle subscription waits before it
	// looks again at the priority sub-queues and due delayed messages;
	// new messages of priority 0 wake it at once. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// MaxMessageSize is the largest bus.Message.Size Publish accepts.
	// Default DefaultMaxMessageSize.
	MaxMessageSize int
	// DialTimeout bounds connecting, including New's first round trip.
	DialTimeout time.Duration
	// ReadTimeout bounds each command's reply (blocking waits get their
	// wait on top). Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// PoolSize is the most connections the Broker keeps for publishing
	// and settling; each subscription has one more. Default: go-redis's.
	PoolSize int
	// Logger receives errors of the background work (fetching, renewing,
	// restoring), which is retried. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Addr == "" && o.MasterName == "" {
		o.Addr = DefaultAddr
	}
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.RestoreInterval == 0 {
		o.RestoreInterval = min(DefaultRestoreInterval, o.VisibilityTimeout/2)
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultReadTimeout
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
	for _, a := range o.SentinelAddrs {
		redisconn.CheckAddr(a, 0, add)
	}
	switch {
	case o.MasterName != "" && len(o.SentinelAddrs) == 0:
		add("MasterName without SentinelAddrs")
	case o.MasterName != "" && o.Addr != "":
		add("Addr %q with MasterName: Sentinel names the master", o.Addr)
	case o.MasterName == "" && len(o.SentinelAddrs) > 0:
		add("SentinelAddrs without MasterName")
	}
	if o.SentinelPassword != "" && o.MasterName == "" {
		add("SentinelPassword without MasterName")
	}
	if o.VisibilityTimeout != 0 && (o.VisibilityTimeout < 100*time.Millisecond || o.VisibilityTimeout > 30*24*time.Hour) {
		add("VisibilityTimeout %v: want 100ms to 30 days", o.VisibilityTimeout)
	}
	if o.RestoreInterval != 0 && o.RestoreInterval < 10*time.Millisecond {
		add("RestoreInterval %v: want at least 10ms", o.RestoreInterval)
	}
	if o.PollInterval != 0 && (o.PollInterval < 10*time.Millisecond || o.PollInterval > time.Minute) {
		add("PollInterval %v: want 10ms to 1m", o.PollInterval)
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > MaxMessageSizeLimit {
		add("MaxMessageSize %d: want 1 to %d bytes", o.MaxMessageSize, MaxMessageSizeLimit)
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
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// ParseURL returns the Options of a kombu+redis:// or kombu+rediss:// URL,
// which names the server as Celery's broker_url does:
//
//	kombu+redis://[[user]:password@]host[:port][/db][?param=value&...]
//	kombu+sentinel://[[user]:password@]sentinel[:port],...[/master[/db]][?...]
//
// The port defaults to 6379 (26379 for Sentinels) and db to 0; kombu+rediss:// turns on TLS with
// the system's roots. Behind Sentinel the hosts are the Sentinels, the
// user info is the master's, and the master's name is the path or the
// master_name parameter: Celery's
//
//	broker_url = "sentinel://:pw@s1:26379;sentinel://:pw@s2:26379"
//	broker_transport_options = {"master_name": "mymaster"}
//
// is kombu+sentinel://:pw@s1:26379,s2:26379/mymaster (Celery's
// sentinel_kwargs password is sentinel_password). Query parameters, named after kombu's transport
// options (durations in Go syntax such as 30s, or plain seconds as kombu
// takes them):
//
//	global_keyprefix          KeyPrefix
//	visibility_timeout        default DefaultVisibilityTimeout (1h)
//	unacked_restore_interval  RestoreInterval
//	poll_interval             default DefaultPollInterval
//	max_message_size          bytes; default DefaultMaxMessageSize
//	dial_timeout, read_timeout, pool_size
//
// and, with kombu+rediss://, the TLS parameters every backend shares (see
// driver.Params): tls_ca, tls_cert, tls_key, tls_server_name,
// tls_skip_verify.
//
// Errors match bus.ErrBadURL, list every problem, and never contain the
// password.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	p := driver.NewParams(u)
	if u.Scheme == SchemeSentinel {
		c := *u
		c.Scheme = Scheme + redisconn.SentinelSuffix
		u = &c
	}
	e := redisconn.Parse(u, Scheme, SchemeTLS, p)
	switch {
	case e.Mode == redisconn.Cluster:
		// Celery's Redis transport keeps every queue's unacked messages
		// in two keys shared by all queues, which a cluster cannot put
		// in one slot with the queues; Celery has no cluster transport.
		p.Problemf("a Redis Cluster is not supported: kombu's Redis transport needs one server (or Sentinel, %s://)", SchemeSentinel)
	case e.Mode == redisconn.Sentinel && u.Scheme != Scheme+redisconn.SentinelSuffix:
		p.Problemf("scheme %q: use %s:// for Sentinel", u.Scheme, SchemeSentinel)
	}
	if e.Mode == redisconn.Sentinel && e.MasterName != "" {
		o.MasterName, o.SentinelAddrs, o.SentinelPassword = e.MasterName, e.Addrs, e.SentinelPassword
	}
	o.Addr, o.Username, o.Password, o.DB, o.TLS = e.Addr, e.Username, e.Password, e.DB, e.TLS
	p.String(&o.KeyPrefix, "global_keyprefix")
	p.Duration(&o.VisibilityTimeout, "visibility_timeout", true)
	p.Duration(&o.RestoreInterval, "unacked_restore_interval", true)
	p.Duration(&o.PollInterval, "poll_interval", true)
	p.Duration(&o.DialTimeout, "dial_timeout", true)
	p.Duration(&o.ReadTimeout, "read_timeout", true)
	p.Int(&o.MaxMessageSize, "max_message_size", 1)
	p.Int(&o.PoolSize, "pool_size", 1)
	if err := p.Err(driver.ConfigProblems(o.Validate())...); err != nil {
		return Options{}, err
	}
	return o, nil
}
