package kafka

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Scheme is the URL scheme of this package, registered with bus.Register:
//
//	kafka://[user:password@]host:port[,host:port...][?param=value&...]
//
// Several brokers are separated by commas; a host without a port gets
// 9092. Go's URL parser wants a port on the last host, and takes no IPv6
// addresses in a list: put those in the brokers parameter instead.
// Durations are Go durations ("250ms", "10s"). Parameters (see Options
// for what each means and its default):
//
//	brokers             more broker addresses, comma-separated
//	client_id           Options.ClientID
//	dial_timeout        Options.DialTimeout
//	tls                 true: TLS with the system's roots
//	tls_ca, tls_cert, tls_key, tls_server_name, tls_skip_verify
//	                    the TLS parameters every backend shares (see
//	                    driver.Params); each implies tls
//	sasl                plain, scram-sha-256 or scram-sha-512; the
//	                    credentials are the URL's user and password
//	partitions          Options.Partitions
//	replication_factor  Options.ReplicationFactor
//	min_insync_replicas Options.MinInsyncReplicas
//	rebalance           Options.Rebalance: cooperative or eager
//	instance_id         Options.InstanceID (static membership)
//	create_topics       false: Options.NoTopicCreation
//	max_message_size    Options.MaxMessageSize
//	batch_timeout       Options.BatchTimeout
//	batch_size          Options.BatchSize (no effect)
//	compression         Options.Compression
//	acks                Options.Acks: all or leader
//	write_timeout       Options.WriteTimeout
//	session_timeout     Options.SessionTimeout
//	heartbeat_interval  Options.HeartbeatInterval
//	rebalance_timeout   Options.RebalanceTimeout
//	join_backoff        Options.JoinBackoff
//	commit_interval     Options.CommitInterval
//	drain_timeout       Options.DrainTimeout
//	fetch_max_wait      Options.FetchMaxWait
//	metadata_max_age    Options.MetadataMaxAge
//	retry_lookahead     Options.RetryLookahead
//	blocking_retry      Options.BlockingRetry
const Scheme = "kafka"

func init() { bus.Register(Scheme, open) }

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, opts)
}

// ParseURL returns the Options a kafka:// URL describes. Every problem is
// reported at once, as a *bus.ConfigError wrapped with bus.ErrBadURL; no
// error repeats the URL's password.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	if u.Scheme != Scheme {
		return o, fmt.Errorf("%w: scheme %q is not %s", bus.ErrBadURL, u.Scheme, Scheme)
	}
	p := driver.NewParams(u)
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		p.Problemf("a kafka URL has no path")
	}
	addBrokers := func(list string) {
		for _, h := range strings.Split(list, ",") {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(h); err != nil {
				h = net.JoinHostPort(strings.Trim(h, "[]"), "9092")
			}
			o.Brokers = append(o.Brokers, h)
		}
	}
	addBrokers(u.Host)
	var more, mechanism string
	p.String(&more, "brokers")
	addBrokers(more)
	p.String(&o.ClientID, "client_id")
	p.Duration(&o.DialTimeout, "dial_timeout")
	o.TLS = p.TLS(false, true)
	if o.TLS != nil && !p.Has("tls_server_name", "server_name_indication") {
		// franz-go verifies each broker by its own address.
		o.TLS.ServerName = ""
	}
	p.String(&mechanism, "sasl")
	p.Int(&o.Partitions, "partitions", 1)
	p.Int(&o.ReplicationFactor, "replication_factor", -1)
	p.Int(&o.MinInsyncReplicas, "min_insync_replicas", 1)
	p.String(&o.Rebalance, "rebalance")
	p.String(&o.InstanceID, "instance_id")
	create := true
	p.Bool(&create, "create_topics")
	o.NoTopicCreation = !create
	p.Int(&o.MaxMessageSize, "max_message_size", 1)
	p.Duration(&o.BatchTimeout, "batch_timeout")
	p.Int(&o.BatchSize, "batch_size", 1)
	p.String(&o.Compression, "compression")
	p.String(&o.Acks, "acks")
	p.Duration(&o.WriteTimeout, "write_timeout")
	p.Duration(&o.SessionTimeout, "session_timeout")
	p.Duration(&o.HeartbeatInterval, "heartbeat_interval")
	p.Duration(&o.RebalanceTimeout, "rebalance_timeout")
	p.Duration(&o.JoinBackoff, "join_backoff")
	p.Duration(&o.CommitInterval, "commit_interval")
	p.Duration(&o.DrainTimeout, "drain_timeout")
	p.Duration(&o.FetchMaxWait, "fetch_max_wait")
	p.Duration(&o.MetadataMaxAge, "metadata_max_age")
	p.Int(&o.RetryLookahead, "retry_lookahead", 1)
	p.Bool(&o.BlockingRetry, "blocking_retry")

	mechanism = strings.ToUpper(mechanism)
	if u.User != nil {
		o.SASL.Username = u.User.Username()
		o.SASL.Password, _ = u.User.Password()
		if mechanism == "" {
			p.Problemf("the URL has credentials but no sasl parameter (plain, scram-sha-256 or scram-sha-512)")
		}
	}
	o.SASL.Mechanism = mechanism
	if err := p.Err(driver.ConfigProblems(o.Validate())...); err != nil {
		return o, err
	}
	return o, nil
}
