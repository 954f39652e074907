package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Topology says how topics and groups map onto RabbitMQ.
type Topology string

const (
	// TopologyExchange maps a topic to a durable fanout exchange and each
	// group to a durable queue "<topic>.<group>" bound to it: groups each get
	// every message, consumers of one group compete.
	TopologyExchange Topology = "exchange"
	// TopologyQueue maps a topic to the durable queue of that name, reached
	// through the default exchange, as classic RabbitMQ producers and
	// consumers (and Celery) use it. Groups are ignored: every consumer of
	// the queue competes.
	TopologyQueue Topology = "queue"
)

// DefaultConfirmTimeout is Options.ConfirmTimeout's default.
const DefaultConfirmTimeout = 30 * time.Second

// DefaultMaxMessageSize is the message size limit when
// Options.MaxMessageSize is zero; RabbitMQ's own default limit is larger.
const DefaultMaxMessageSize = 16 << 20

// Options configure a Broker. Only URL is required.
type Options struct {
	// URL is the AMQP URI, amqp://user:pass@host:port/vhost or amqps://...
	// Its host may be a comma-separated list of a cluster's nodes,
	// amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost (every host with its
	// port, or none): the Broker connects to the first that answers and,
	// when the connection is lost, reconnects starting with the next.
	URL string
	// Topology maps topics and groups to exchanges and queues.
	// Default TopologyExchange.
	Topology Topology
	// QueueType of the queues omnibus declares: "classic" or "quorum".
	// Default "classic".
	QueueType string
	// MaxMessageSize is the largest bus.Message.Size accepted.
	// Default DefaultMaxMessageSize.
	MaxMessageSize int
	// NoDefaultGroup stops Publish from declaring the queue of
	// bus.DefaultGroup. By default that queue exists from the first
	// publish, so messages sent before any consumer started are kept for
	// it; with NoDefaultGroup, a message that no queue receives fails
	// Publish with ErrUnroutable.
	NoDefaultGroup bool
	// DialTimeout bounds connecting, including TLS and the AMQP handshake.
	// Default 10s.
	DialTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval. Default 10s.
	Heartbeat time.Duration
	// ReconnectBackoff is the first pause before reconnecting after the
	// connection is lost; pauses double up to 32 times it. Default 250ms.
	ReconnectBackoff time.Duration
	// PublishChannels is how many confirm-mode channels share publishing.
	// Default 2.
	PublishChannels int
	// ConfirmWindow is the most unconfirmed messages per publish channel.
	// Default 1024.
	ConfirmWindow int
	// ConfirmTimeout bounds how long Publish waits for the confirms of
	// messages it has sent: those still unconfirmed then are named in a
	// *bus.PublishError matching ErrConfirmTimeout (they may yet reach
	// the queue; publishing them again can make duplicates). A queue that
	// lost its majority, or a blocked node, confirms nothing. Default
	// DefaultConfirmTimeout; the caller's context bounds it too.
	ConfirmTimeout time.Duration
	// ConnectionName is shown in RabbitMQ's management UI.
	// Default "omnibus".
	ConnectionName string
	// TLS configures amqps:// connections. Default: the system roots, with
	// verification on.
	TLS *tls.Config
	// Logger receives connection loss and recovery. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Topology == "" {
		o.Topology = TopologyExchange
	}
	if o.QueueType == "" {
		o.QueueType = "classic"
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.ReconnectBackoff == 0 {
		o.ReconnectBackoff = 250 * time.Millisecond
	}
	if o.PublishChannels == 0 {
		o.PublishChannels = 2
	}
	if o.ConfirmWindow == 0 {
		o.ConfirmWindow = 1024
	}
	if o.ConfirmTimeout == 0 {
		o.ConfirmTimeout = DefaultConfirmTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ConnectionName == "" {
		o.ConnectionName = "omnibus"
	}
	return o
}

// Validate reports every problem of the options at once.
func (o Options) Validate() error {
	var p []error
	if o.URL == "" {
		p = append(p, errors.New("URL is empty"))
	} else if u, err := bus.ParseURL(o.URL); err != nil {
		p = append(p, err)
	} else if u.Scheme != "amqp" && u.Scheme != "amqps" {
		p = append(p, fmt.Errorf("URL scheme %q is not amqp or amqps", u.Scheme))
	}
	switch o.Topology {
	case "", TopologyExchange, TopologyQueue:
	default:
		p = append(p, fmt.Errorf("topology %q is not %q or %q", o.Topology, TopologyExchange, TopologyQueue))
	}
	switch o.QueueType {
	case "", "classic", "quorum":
	default:
		p = append(p, fmt.Errorf("queue type %q is not classic or quorum", o.QueueType))
	}
	for name, v := range map[string]int{"MaxMessageSize": o.MaxMessageSize,
		"PublishChannels": o.PublishChannels, "ConfirmWindow": o.ConfirmWindow} {
		if v < 0 {
			p = append(p, fmt.Errorf("%s %d is negative", name, v))
		}
	}
	for name, v := range map[string]time.Duration{"DialTimeout": o.DialTimeout,
		"Heartbeat": o.Heartbeat, "ReconnectBackoff": o.ReconnectBackoff, "ConfirmTimeout": o.ConfirmTimeout} {
		if v < 0 {
			p = append(p, fmt.Errorf("%s %v is negative", name, v))
		}
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

// clientParams are the URI parameters the AMQP client reads itself.
var clientParams = []string{"heartbeat", "connection_timeout", "channel_max", "auth_mechanism"}

// ParseURL turns an amqp:// or amqps:// URL into Options. omnibus's own
// query parameters are:
//
//	topology          exchange (default) or queue
//	queue_type        classic (default) or quorum
//	max_message_size  bytes
//	publish_channels  confirm channels shared by publishers
//	confirm_window    unconfirmed messages per channel
//	confirm_timeout   e.g. 10s; default DefaultConfirmTimeout
//	no_default_group  true: do not declare the default group's queue on publish
//	dial_timeout      e.g. 5s
//	connection_name   shown in the management UI
//
// and, with amqps://, the TLS parameters every backend shares (see
// driver.Params): tls_ca, tls_cert, tls_key, tls_server_name and
// tls_skip_verify, or RabbitMQ's own names for them, cacertfile,
// certfile, keyfile and server_name_indication. The AMQP client's
// heartbeat, connection_timeout, channel_max and auth_mechanism pass to
// it; any other parameter is an error.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	p := driver.NewParams(u)
	var topology string
	p.String(&topology, "topology")
	o.Topology = Topology(topology)
	p.String(&o.QueueType, "queue_type")
	p.Int(&o.MaxMessageSize, "max_message_size", 1)
	p.Int(&o.PublishChannels, "publish_channels", 1)
	p.Int(&o.ConfirmWindow, "confirm_window", 1)
	p.Duration(&o.ConfirmTimeout, "confirm_timeout")
	p.Bool(&o.NoDefaultGroup, "no_default_group")
	p.String(&o.ConnectionName, "connection_name")
	p.Duration(&o.DialTimeout, "dial_timeout")
	o.TLS = p.TLS(u.Scheme == "amqps", false)
	if o.TLS != nil && !p.Has("tls_server_name", "server_name_indication") {
		// amqp091 verifies the host it dials.
		o.TLS.ServerName = ""
	}
	q := url.Values{}
	for _, k := range clientParams {
		var v string
		if p.Has(k) {
			p.String(&v, k)
			q.Set(k, v)
		}
	}
	c := *u
	c.RawQuery = q.Encode()
	o.URL = c.String()
	if err := p.Err(driver.ConfigProblems(o.Validate())...); err != nil {
		return o, err
	}
	return o, nil
}

// String describes the options with the URL's password replaced by
// "xxxxx", so that printing or logging Options never reveals it.
func (o Options) String() string {
	type fields Options // without the methods, for %+v
	c := o
	if u, err := bus.ParseURL(o.URL); err == nil {
		c.URL = u.Redacted()
	} else if o.URL != "" {
		c.URL = "(unparsable URL)"
	}
	return fmt.Sprintf("%+v", fields(c))
}

// GoString keeps %#v from printing the password.
func (o Options) GoString() string { return "rabbitmq.Options" + o.String() }

// LogValue keeps slog from printing the password.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }
