package rocketmq

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Defaults of Options.
const (
	DefaultNameServer     = "127.0.0.1:9876"
	DefaultQueues         = 4
	DefaultMaxMessageSize = 4<<20 - 64<<10
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultSendTimeout    = 3 * time.Second
	DefaultPollTimeout    = 5 * time.Second
	DefaultCommitInterval = time.Second
	DefaultRebalance      = time.Second
	DefaultDrainTimeout   = 5 * time.Second
	// DefaultCompressOver is the Java client's compressMsgBodyOverHowmuch.
	DefaultCompressOver = 4 << 10
	// DefaultMaxInflatedSize is 16 times the broker's default
	// maxMessageSize (4 MiB), the limit the Java client also puts, by
	// default, on a body before it compresses it.
	DefaultMaxInflatedSize = 64 << 20
)

// MaxMessageSizeLimit is the largest Options.MaxMessageSize allowed: the
// broker's default maxMessageSize (4 MiB), less room for the properties
// that carry the ID, key and headers.
const MaxMessageSizeLimit = 4<<20 - 32<<10

// Options configure a Broker. The zero value connects to DefaultNameServer
// with every default.
type Options struct {
	// NameServers are the host:port addresses of the name servers.
	// Default DefaultNameServer.
	NameServers []string
	// Queues is the number of queues of the topics this package creates
	// (a topic's queues are its unit of order and of sharing among a
	// group's consumers). Default DefaultQueues.
	Queues int
	// NoTopicCreation makes Publish and Subscribe fail on a topic that
	// does not exist instead of creating it on every master broker.
	NoTopicCreation bool
	// MaxMessageSize is the largest bus.Message.Size Publish accepts, at
	// most MaxMessageSizeLimit. Default DefaultMaxMessageSize.
	MaxMessageSize int
	// DialTimeout bounds each connection attempt, and New's first round
	// trip to a name server. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds each request to a broker or name server when
	// the caller's context has no earlier deadline. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// SendTimeout bounds each attempt to send to one broker. A broker
	// that has not answered within it counts as unreachable, as one that
	// refuses the connection does: the messages go on to another broker
	// group, and keyless sends pass over it for a while. A broker that
	// is cut off without closing the connection answers nothing, and
	// the name servers keep routing to it for up to two minutes. (The
	// message may have been stored and then come twice.) Default
	// DefaultSendTimeout, the Java client's sendMsgTimeout.
	SendTimeout time.Duration
	// PollTimeout is how long the broker may hold a pull that finds
	// nothing (long polling). Default DefaultPollTimeout.
	PollTimeout time.Duration
	// CommitInterval is how often a subscription stores its consume
	// offsets on the broker (also on rebalance and Close). Default
	// DefaultCommitInterval.
	CommitInterval time.Duration
	// RebalanceInterval is how often a subscription checks its group's
	// members and queue locks (brokers also notify it when members come
	// and go). Default DefaultRebalance.
	RebalanceInterval time.Duration
	// DrainTimeout is how long a subscription that loses a queue to
	// another member waits for the deliveries it holds from that queue to
	// be settled before it lets the queue go. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Compression compresses the bodies Publish sends that are at least
	// CompressOver bytes long, when that makes them shorter, and marks the
	// type in the message's system flag as RocketMQ 5 clients do.
	// Consumers need a RocketMQ 5 client (or this package) for lz4 and
	// zstd: older clients take every compressed body for zlib.
	// MaxMessageSize applies to the uncompressed message. Default
	// CompressionNone.
	Compression Compression
	// CompressOver is the body length from which Compression applies.
	// Default DefaultCompressOver.
	CompressOver int
	// MaxInflatedSize is the most bytes the compressed body of a pulled
	// message may inflate to. A message over it is not delivered: it is
	// logged with its queue offset and passed over. The broker bounds
	// the stored (compressed) body, 4 MiB by default, which zlib alone
	// can inflate a thousandfold. Default DefaultMaxInflatedSize.
	MaxInflatedSize int
	// Logger receives errors of the background work (pulling, committing,
	// rebalancing), which is retried. Default slog.Default().
	Logger *slog.Logger

	// TLS, when set, makes every connection, to the name servers and to
	// the brokers, TLS with this configuration. A server's certificate
	// is verified for the host of the address dialled (the brokers'
	// addresses come from the name servers) unless ServerName names
	// another. Default nil: plain TCP.
	TLS *tls.Config
	// AccessKey and SecretKey are the credentials of the brokers' ACL
	// (ACL 1.0 of RocketMQ 4.4 to 5.3.2; with ACL 2.0, of 5.3 and later,
	// the user's name and password). With an AccessKey, every request
	// carries it and its signature, made with SecretKey, which is never
	// sent. Name servers
	// take no credentials, so a wrong key fails the first request to a
	// broker (Publish, Subscribe), with an error that matches
	// bus.ErrAuth. Default: requests go unsigned.
	AccessKey string
	SecretKey string
	// SecurityToken goes with every signed request when set, for
	// services that issue temporary keys with a token.
	SecurityToken string
}

// String describes the options with SecretKey and SecurityToken replaced
// by "xxxxx", so that printing or logging Options never reveals them.
func (o Options) String() string {
	type fields Options // without the methods, for %+v
	c := o
	if c.SecretKey != "" {
		c.SecretKey = "xxxxx"
	}
	if c.SecurityToken != "" {
		c.SecurityToken = "xxxxx"
	}
	return fmt.Sprintf("%+v", fields(c))
}

// GoString keeps %#v from printing the secret key.
func (o Options) GoString() string { return "rocketmq.Options" + o.String() }

// LogValue keeps slog from printing the secret key.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

func (o Options) withDefaults() Options {
	if len(o.NameServers) == 0 {
		o.NameServers = []string{DefaultNameServer}
	}
	if o.Queues == 0 {
		o.Queues = DefaultQueues
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = DefaultSendTimeout
	}
	if o.PollTimeout == 0 {
		o.PollTimeout = DefaultPollTimeout
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.RebalanceInterval == 0 {
		o.RebalanceInterval = DefaultRebalance
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.CompressOver == 0 {
		o.CompressOver = DefaultCompressOver
	}
	if o.MaxInflatedSize == 0 {
		o.MaxInflatedSize = DefaultMaxInflatedSize
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
	for _, a := range o.NameServers {
		if _, port, err := net.SplitHostPort(a); err != nil {
			add("name server %q: want host:port", a)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			add("name server %q: port must be 1-65535", a)
		}
	}
	if o.Queues < 0 || o.Queues > 1024 {
		add("Queues %d: want 1-1024", o.Queues)
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > MaxMessageSizeLimit {
		add("MaxMessageSize %d: want 1-%d", o.MaxMessageSize, MaxMessageSizeLimit)
	}
	if o.Compression < CompressionNone || o.Compression > CompressionZstd {
		add("Compression %d: want none, zlib, lz4 or zstd", int(o.Compression))
	}
	if o.CompressOver < 0 {
		add("CompressOver %d is negative", o.CompressOver)
	}
	if o.MaxInflatedSize < 0 {
		add("MaxInflatedSize %d is negative", o.MaxInflatedSize)
	}
	switch {
	case o.AccessKey != "" && o.SecretKey == "":
		add("AccessKey %q has no SecretKey", o.AccessKey)
	case o.AccessKey == "" && o.SecretKey != "":
		add("a SecretKey needs its AccessKey")
	case o.AccessKey == "" && o.SecurityToken != "":
		add("a SecurityToken needs an AccessKey")
	}
	for name, d := range map[string]time.Duration{
		"DialTimeout": o.DialTimeout, "RequestTimeout": o.RequestTimeout, "SendTimeout": o.SendTimeout, "PollTimeout": o.PollTimeout,
		"CommitInterval": o.CommitInterval, "RebalanceInterval": o.RebalanceInterval, "DrainTimeout": o.DrainTimeout,
	} {
		if d < 0 {
			add("%s %v is negative", name, d)
		}
	}
	if len(p) == 0 {
		return nil
	}
	return &bus.ConfigError{Problems: p}
}

// Schemes of the URLs this package opens, registered with bus.Register:
// rocketmq:// over TCP, rocketmqs:// over TLS.
//
//	rocketmq://[accessKey:secretKey@]host:port[,host:port...][?param=value&...]
//	rocketmqs://[accessKey:secretKey@]host:port[,host:port...][?param=value&...]
//
// The hosts are name servers; a host without a port gets 9876 (Go's URL
// parser wants a port on the last host, if any host has one). The user
// and password are Options.AccessKey and Options.SecretKey, percent-encoded
// where they hold reserved characters. RocketMQ's signature keeps the
// secret key secret but does not keep a captured request from being sent
// again, so a URL with credentials must say whether it uses TLS:
// rocketmqs://, tls=true or any TLS parameter; or tls=false, for signed
// requests over plain TCP. Durations are Go durations ("250ms", "10s").
// Parameters (see Options for what each means and its default):
//
//	tls                 true: TLS, as rocketmqs:// (with the system's
//	                    roots unless tls_ca names others)
//	tls_ca, tls_cert, tls_key, tls_server_name, tls_skip_verify
//	                    the TLS parameters every backend shares (see
//	                    driver.Params); each implies tls. Without
//	                    tls_server_name, each server's certificate is
//	                    verified for the host dialled
//	queues              Options.Queues
//	create_topics       false: Options.NoTopicCreation
//	max_message_size    Options.MaxMessageSize
//	dial_timeout        Options.DialTimeout
//	request_timeout     Options.RequestTimeout
//	send_timeout        Options.SendTimeout
//	poll_timeout        Options.PollTimeout
//	commit_interval     Options.CommitInterval
//	rebalance_interval  Options.RebalanceInterval
//	drain_timeout       Options.DrainTimeout
//	compression         Options.Compression: none, zlib, lz4 or zstd
//	compress_over       Options.CompressOver
//	max_inflated_size   Options.MaxInflatedSize
const (
	Scheme    = "rocketmq"
	SchemeTLS = "rocketmqs"
)

func init() { bus.Register(SchemeTLS, open) }

// ParseURL returns the Options a rocketmq:// or rocketmqs:// URL
// describes. Errors match bus.ErrBadURL, list every problem, and never
// contain the secret key.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	if u.Scheme != Scheme && u.Scheme != SchemeTLS {
		return o, fmt.Errorf("%w: %s: scheme %q, want %q or %q", bus.ErrBadURL, u.Redacted(), u.Scheme, Scheme, SchemeTLS)
	}
	p := driver.NewParams(u)
	tlsGiven := p.Has("tls")
	o.TLS = p.TLS(u.Scheme == SchemeTLS, true)
	if o.TLS != nil && !p.Has("tls_server_name", "server_name_indication") {
		// Each name server and broker is verified by its own address.
		o.TLS.ServerName = ""
	}
	if u.User != nil {
		o.AccessKey = u.User.Username()
		o.SecretKey, _ = u.User.Password()
		if o.AccessKey == "" {
			p.Problemf("the URL's user, the access key, is empty")
		}
		if o.TLS == nil && !tlsGiven {
			p.Problemf("credentials over plain TCP: use %s:// (or tls=true) for TLS, or say tls=false", SchemeTLS)
		}
	}
	if u.Path != "" && u.Path != "/" {
		p.Problemf("unexpected path %q", u.Path)
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "9876")
		}
		o.NameServers = append(o.NameServers, h)
	}
	p.Int(&o.Queues, "queues", 1)
	p.Int(&o.MaxMessageSize, "max_message_size", 1)
	p.Duration(&o.DialTimeout, "dial_timeout")
	p.Duration(&o.RequestTimeout, "request_timeout")
	p.Duration(&o.SendTimeout, "send_timeout")
	p.Duration(&o.PollTimeout, "poll_timeout")
	p.Duration(&o.CommitInterval, "commit_interval")
	p.Duration(&o.RebalanceInterval, "rebalance_interval")
	p.Duration(&o.DrainTimeout, "drain_timeout")
	if p.Has("compression") {
		var name string
		p.String(&name, "compression")
		if c, err := ParseCompression(name); err != nil {
			p.Problemf("compression=%q: want none, zlib, lz4 or zstd", name)
		} else {
			o.Compression = c
		}
	}
	p.Int(&o.CompressOver, "compress_over", 1)
	p.Int(&o.MaxInflatedSize, "max_inflated_size", 1)
	create := true
	p.Bool(&create, "create_topics")
	o.NoTopicCreation = !create
	if err := p.Err(driver.ConfigProblems(o.Validate())...); err != nil {
		return Options{}, err
	}
	return o, nil
}
