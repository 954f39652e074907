package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
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
//	tls_ca              PEM file of the roots to trust instead (implies tls)
//	tls_server_name     name to verify in the broker's certificate
//	tls_skip_verify     true: do not verify the broker's certificate
//	sasl                plain, scram-sha-256 or scram-sha-512; the
//	                    credentials are the URL's user and password
//	partitions          Options.Partitions
//	replication_factor  Options.ReplicationFactor
//	create_topics       false: Options.NoTopicCreation
//	max_message_size    Options.MaxMessageSize
//	batch_timeout       Options.BatchTimeout
//	batch_size          Options.BatchSize (no effect)
//	compression         Options.Compression
//	write_timeout       Options.WriteTimeout
//	session_timeout     Options.SessionTimeout
//	heartbeat_interval  Options.HeartbeatInterval
//	rebalance_timeout   Options.RebalanceTimeout
//	join_backoff        Options.JoinBackoff
//	commit_interval     Options.CommitInterval
//	drain_timeout       Options.DrainTimeout
//	fetch_max_wait      Options.FetchMaxWait
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
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		add("a kafka URL has no path")
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

	var tlsOn, skipVerify bool
	var caFile, serverName, mechanism string
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		dur := func(d *time.Duration) {
			x, err := time.ParseDuration(v)
			if err != nil || x < 0 {
				add("%s=%q: want a duration such as 250ms or 10s", k, v)
				return
			}
			*d = x
		}
		num := func(n *int, least int) {
			x, err := strconv.Atoi(v)
			if err != nil || x < least {
				add("%s=%q: want a whole number of at least %d", k, v, least)
				return
			}
			*n = x
		}
		flag := func(b *bool) {
			x, err := strconv.ParseBool(v)
			if err != nil {
				add("%s=%q: want true or false", k, v)
				return
			}
			*b = x
		}
		switch k {
		case "brokers":
			addBrokers(v)
		case "client_id":
			o.ClientID = v
		case "dial_timeout":
			dur(&o.DialTimeout)
		case "tls":
			flag(&tlsOn)
		case "tls_ca":
			caFile = v
		case "tls_server_name":
			serverName = v
		case "tls_skip_verify":
			flag(&skipVerify)
		case "sasl":
			mechanism = strings.ToUpper(v)
		case "partitions":
			num(&o.Partitions, 1)
		case "replication_factor":
			num(&o.ReplicationFactor, -1)
		case "create_topics":
			create := true
			flag(&create)
			o.NoTopicCreation = !create
		case "max_message_size":
			num(&o.MaxMessageSize, 1)
		case "batch_timeout":
			dur(&o.BatchTimeout)
		case "batch_size":
			num(&o.BatchSize, 1)
		case "compression":
			o.Compression = v
		case "write_timeout":
			dur(&o.WriteTimeout)
		case "session_timeout":
			dur(&o.SessionTimeout)
		case "heartbeat_interval":
			dur(&o.HeartbeatInterval)
		case "rebalance_timeout":
			dur(&o.RebalanceTimeout)
		case "join_backoff":
			dur(&o.JoinBackoff)
		case "commit_interval":
			dur(&o.CommitInterval)
		case "drain_timeout":
			dur(&o.DrainTimeout)
		case "fetch_max_wait":
			dur(&o.FetchMaxWait)
		case "retry_lookahead":
			num(&o.RetryLookahead, 1)
		case "blocking_retry":
			flag(&o.BlockingRetry)
		default:
			add("unknown parameter %q", k)
		}
	}

	if u.User != nil {
		o.SASL.Username = u.User.Username()
		o.SASL.Password, _ = u.User.Password()
		if mechanism == "" {
			add("the URL has credentials but no sasl parameter (plain, scram-sha-256 or scram-sha-512)")
		}
	}
	o.SASL.Mechanism = mechanism

	if tlsOn || caFile != "" || skipVerify || serverName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: skipVerify}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			pool := x509.NewCertPool()
			switch {
			case err != nil:
				add("tls_ca: %v", err)
			case !pool.AppendCertsFromPEM(pem):
				add("tls_ca: %s holds no PEM certificate", caFile)
			default:
				cfg.RootCAs = pool
			}
		}
		o.TLS = cfg
	}

	if err := o.Validate(); err != nil {
		if ce, ok := err.(*bus.ConfigError); ok {
			problems = append(problems, ce.Problems...)
		}
	}
	if len(problems) > 0 {
		return o, fmt.Errorf("%w: %s: %w", bus.ErrBadURL, u.Redacted(), &bus.ConfigError{Problems: problems})
	}
	return o, nil
}
