// Package redisconn holds what the Redis-based adapters (redisstream and
// kombu) share: reading the server's address, credentials and database
// from a redis:// style URL, the go-redis clients of a standalone server,
// a Redis Cluster and a master watched by Sentinel, and probing what the
// server promises.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Mode is how a client reaches Redis.
type Mode int

const (
	// Standalone: one server at Endpoint.Addr.
	Standalone Mode = iota
	// Cluster: a Redis Cluster, Endpoint.Addrs its seed nodes.
	Cluster
	// Sentinel: the master named Endpoint.MasterName, found through the
	// Sentinels at Endpoint.Addrs.
	Sentinel
)

func (m Mode) String() string {
	switch m {
	case Cluster:
		return "cluster"
	case Sentinel:
		return "sentinel"
	}
	return "standalone"
}

// Schemes of the URLs of a Redis Cluster and of a master behind Sentinel,
// as suffixes of the adapters' own schemes: redis+cluster://,
// rediss+sentinel://.
const (
	ClusterSuffix  = "+cluster"
	SentinelSuffix = "+sentinel"
)

// Endpoint is a Redis server, cluster or Sentinel-watched master and how
// to log in to it.
type Endpoint struct {
	Mode       Mode
	Addr       string   // Standalone
	Addrs      []string // Cluster seed nodes, or the Sentinels
	MasterName string   // Sentinel
	// SentinelPassword authenticates with the Sentinels (their
	// requirepass), when they need it; Username and Password are the
	// data nodes'.
	SentinelPassword string
	Username         string
	Password         string
	DB               int
	TLS              *tls.Config
}

// Where names the endpoint for messages: its address, its seed nodes, or
// the master and its Sentinels.
func (e Endpoint) Where() string {
	switch e.Mode {
	case Cluster:
		return "cluster " + strings.Join(e.Addrs, ",")
	case Sentinel:
		return "master " + strconv.Quote(e.MasterName) + " of sentinels " + strings.Join(e.Addrs, ",")
	}
	return e.Addr
}

// Parse reads a redis:// style URL: its scheme (scheme, or schemeTLS for
// TLS, each optionally followed by ClusterSuffix or SentinelSuffix), its
// hosts (default port 6379, 26379 for Sentinels; a comma-separated list for
// a cluster's seed nodes or the Sentinels), user info, and path: the database number for a
// standalone server, none for a cluster (which has only database 0), and
// /<master name>[/<database number>] behind Sentinel (or the master_name
// parameter, as kombu's transport option names it). It reads the TLS
// parameters common to every backend (see driver.Params: with TLS,
// verification against the system's roots unless tls_ca names others) and,
// behind Sentinel, sentinel_password. Each problem goes to p.
func Parse(u *url.URL, scheme, schemeTLS string, p *driver.Params) Endpoint {
	var e Endpoint
	add := p.Problemf
	base := u.Scheme
	if b, ok := strings.CutSuffix(base, ClusterSuffix); ok {
		base, e.Mode = b, Cluster
	} else if b, ok := strings.CutSuffix(base, SentinelSuffix); ok {
		base, e.Mode = b, Sentinel
	}
	switch base {
	case scheme, schemeTLS:
	default:
		add("scheme %q is not %s or %s (each optionally with %s or %s)", u.Scheme, scheme, schemeTLS, ClusterSuffix, SentinelSuffix)
	}
	e.TLS = p.TLS(base == schemeTLS, false)
	if u.Opaque != "" {
		add("want %s://host:port", u.Scheme)
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
	}
	port := "6379"
	if e.Mode == Sentinel {
		port = "26379"
	}
	hosts := hostList(u.Host, port, add)
	if e.TLS != nil && len(hosts) > 0 && e.TLS.ServerName == u.Hostname() {
		// A host list's "hostname" is not one: verify the first host's
		// name unless tls_server_name says otherwise.
		e.TLS.ServerName, _, _ = net.SplitHostPort(hosts[0])
	}
	path := strings.TrimPrefix(u.Path, "/")
	switch e.Mode {
	case Standalone:
		if len(hosts) > 1 {
			add("%d hosts: a standalone server has one (use %s%s:// for a cluster, %s%s:// for Sentinel)",
				len(hosts), scheme, ClusterSuffix, scheme, SentinelSuffix)
		}
		if len(hosts) > 0 {
			e.Addr = hosts[0]
		}
		e.DB = database(path, u.Path, add)
	case Cluster:
		e.Addrs = hosts
		if path != "" {
			add("path %q: a Redis Cluster has only database 0; want no path", u.Path)
		}
	case Sentinel:
		e.Addrs = hosts
		master, db, _ := strings.Cut(path, "/")
		if master == "" {
			p.String(&master, "master_name") // kombu's transport option
		}
		if master == "" {
			add("path %q: want /<master name>[/<database number>] (or master_name=)", u.Path)
		}
		e.MasterName = master
		e.DB = database(db, u.Path, add)
		p.String(&e.SentinelPassword, "sentinel_password")
	}
	return e
}

// hostList splits a URL's host into host:port addresses, defaulting the
// port to defaultPort and the host to localhost.
func hostList(host, defaultPort string, add func(string, ...any)) []string {
	if host == "" {
		return nil
	}
	var out []string
	for h := range strings.SplitSeq(host, ",") {
		if h == "" {
			add("host list %q has an empty entry", host)
			continue
		}
		name, port, err := net.SplitHostPort(h)
		if err != nil {
			name, port = h, ""
		}
		if port == "" {
			port = defaultPort
		}
		if name == "" {
			name = "localhost"
		}
		out = append(out, net.JoinHostPort(strings.Trim(name, "[]"), port))
	}
	return out
}

func database(s, path string, add func(string, ...any)) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		add("path %q: want a database number, got %q", path, s)
	}
	return n
}

// CheckAddr reports, through add, an Addr that is not host:port with a
// port of 1-65535 (an empty Addr is left to the default) and a negative
// DB, naming them as the adapters' Options fields.
func CheckAddr(addr string, db int, add func(format string, args ...any)) {
	if addr != "" {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			add("Addr %q: want host:port", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			add("Addr %q: port must be 1-65535", addr)
		}
	}
	if db < 0 {
		add("DB %d is negative", db)
	}
}

// Client returns the go-redis options of one client of a standalone
// server e: no command is sent twice behind the caller's back (MaxRetries
// -1: a resent write could apply twice), a dial is tried once within dial,
// reads and writes are bounded by rw and by the caller's context, and no
// maintenance notification workers start (they are for Redis Enterprise
// and Cloud endpoints).
func Client(e Endpoint, dial, rw time.Duration, poolSize int) *redis.Options {
	return &redis.Options{
		Addr:                     e.Addr,
		Username:                 e.Username,
		Password:                 e.Password,
		DB:                       e.DB,
		TLSConfig:                e.TLS,
		MaxRetries:               -1,
		DialTimeout:              dial,
		DialerRetries:            1,
		ReadTimeout:              rw,
		WriteTimeout:             rw,
		ContextTimeoutEnabled:    true,
		PoolSize:                 poolSize,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// ClusterReloadInterval is how often a cluster client reloads the
// cluster's slot map while in use. go-redis's default, 60 s, keeps a
// client dialing a dead master for up to a minute after its replica took
// over; a few seconds keeps that window near the failover's own.
const ClusterReloadInterval = 2 * time.Second

// NewClient returns a client of e with the settings of Client: a
// *redis.Client for a standalone server, a *redis.ClusterClient for a
// cluster, and a failover *redis.Client that follows the master Sentinel
// names. pipelinePool < 0 makes pipelines use the pool's own connections
// (see redis.Options.PipelinePoolSize).
//
// A cluster client follows MOVED and ASK redirects, which is safe: the
// node did not run the command. It also sends a command once more when
// the connection broke before its reply came (go-redis retries such
// errors whatever MaxRetries says), so on a cluster a write can apply
// twice after a network failure.
func NewClient(e Endpoint, dial, rw time.Duration, poolSize, pipelinePool int) redis.UniversalClient {
	o := Client(e, dial, rw, poolSize)
	o.PipelinePoolSize = pipelinePool
	switch e.Mode {
	case Cluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                      e.Addrs,
			Username:                   o.Username,
			Password:                   o.Password,
			TLSConfig:                  o.TLSConfig,
			MaxRetries:                 o.MaxRetries,
			DialTimeout:                o.DialTimeout,
			DialerRetries:              o.DialerRetries,
			ReadTimeout:                o.ReadTimeout,
			WriteTimeout:               o.WriteTimeout,
			ContextTimeoutEnabled:      true,
			PoolSize:                   o.PoolSize,
			PipelinePoolSize:           o.PipelinePoolSize,
			ClusterStateReloadInterval: ClusterReloadInterval,
			MaintNotificationsConfig:   o.MaintNotificationsConfig,
		})
	case Sentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            e.MasterName,
			SentinelAddrs:         e.Addrs,
			SentinelPassword:      e.SentinelPassword,
			Username:              o.Username,
			Password:              o.Password,
			DB:                    o.DB,
			TLSConfig:             o.TLSConfig,
			MaxRetries:            o.MaxRetries,
			DialTimeout:           o.DialTimeout,
			DialerRetries:         o.DialerRetries,
			ReadTimeout:           o.ReadTimeout,
			WriteTimeout:          o.WriteTimeout,
			ContextTimeoutEnabled: true,
			PoolSize:              o.PoolSize,
			PipelinePoolSize:      o.PipelinePoolSize,
		})
	}
	return redis.NewClient(o)
}

// Server is what Probe learned of a Redis server, or of the masters of a
// cluster (the weakest of them).
type Server struct {
	Product string // "Redis", or "Valkey" when INFO names it
	Version string // redis_version (valkey_version), "" when INFO was refused
	Mode    string // redis_mode: standalone, cluster or sentinel
	// Persistent: appendonly yes with appendfsync always or everysec, as
	// CONFIG GET reports it; false too when CONFIG is refused (ACLs,
	// managed services), since persistence is then unknown.
	Persistent bool
	// Fsync is appendfsync ("" when the AOF is off or CONFIG refused).
	Fsync string
	// Masters is how many masters answered: 1, or a cluster's count.
	Masters int
	// Replicas is the fewest replicas connected to a master (INFO
	// replication), -1 when unknown.
	Replicas int
	// MinReplicasToWrite is the master's min-replicas-to-write, -1 when
	// unknown.
	MinReplicasToWrite int
}

// AtLeast reports whether the server's version is at least major.minor.
// An unknown version passes.
func (s Server) AtLeast(major, minor int) bool {
	if s.Version == "" {
		return true
	}
	parts := strings.SplitN(s.Version, ".", 3)
	ma, _ := strconv.Atoi(parts[0])
	mi := 0
	if len(parts) > 1 {
		mi, _ = strconv.Atoi(parts[1])
	}
	return ma > major || (ma == major && mi >= minor)
}

// Probe checks within dial that the server answers and accepts e's
// credentials (failures mapped by DialError), and reads its version, mode,
// persistence and replication settings: of every master of a cluster,
// keeping the weakest.
func Probe(ctx context.Context, rdb redis.UniversalClient, e Endpoint, dial time.Duration, name string) (Server, error) {
	ctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return Server{}, DialError(err, e, name)
	}
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return probeOne(ctx, rdb), nil
	}
	var mu sync.Mutex
	var s Server
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		one := probeOne(ctx, c)
		mu.Lock()
		defer mu.Unlock()
		if s.Masters == 0 {
			s = one
			return nil
		}
		s.Masters++
		s.Persistent = s.Persistent && one.Persistent
		if one.Fsync != s.Fsync {
			s.Fsync = "mixed"
		}
		s.Replicas = min(s.Replicas, one.Replicas)
		s.MinReplicasToWrite = min(s.MinReplicasToWrite, one.MinReplicasToWrite)
		return nil
	})
	if err != nil {
		return Server{}, DialError(err, e, name)
	}
	return s, nil
}

func probeOne(ctx context.Context, c redis.Cmdable) Server {
	s := Server{Product: "Redis", Masters: 1, Replicas: -1, MinReplicasToWrite: -1}
	if info, err := c.Info(ctx, "server", "replication").Result(); err == nil {
		s.Version, s.Mode = infoField(info, "redis_version"), infoField(info, "redis_mode")
		if v := infoField(info, "valkey_version"); v != "" {
			s.Product, s.Version = "Valkey", v
		}
		if n, err := strconv.Atoi(infoField(info, "connected_slaves")); err == nil {
			s.Replicas = n
		}
	}
	if cfg, err := c.ConfigGet(ctx, "append*").Result(); err == nil && cfg["appendonly"] == "yes" {
		s.Fsync = cfg["appendfsync"]
		s.Persistent = s.Fsync == "always" || s.Fsync == "everysec"
	}
	if cfg, err := c.ConfigGet(ctx, "min-replicas-to-write").Result(); err == nil {
		if n, err := strconv.Atoi(cfg["min-replicas-to-write"]); err == nil {
			s.MinReplicasToWrite = n
		}
	}
	return s
}

func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// DialError maps a failure of the first round trip to the bus sentinels:
// refused credentials are bus.ErrAuth, a NOPERM reply bus.ErrForbidden,
// other Redis error replies stay as they are, and everything else (no
// connection, a timeout, a server that does not speak Redis) is
// bus.ErrUnreachable. go-redis errors name the address, never the
// password. name is the adapter's, for the message.
func DialError(err error, e Endpoint, name string) error {
	msg := err.Error()
	for _, p := range []string{"WRONGPASS", "NOAUTH", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"} {
		if strings.HasPrefix(msg, p) {
			return fmt.Errorf("%w: redis %s as %q: %v", bus.ErrAuth, e.Where(), e.Username, err)
		}
	}
	var re redis.Error
	if errors.As(err, &re) {
		return Forbidden(fmt.Errorf("%s: connecting to %s: %w", name, e.Where(), err))
	}
	return fmt.Errorf("%w: redis %s: %v", bus.ErrUnreachable, e.Where(), err)
}

// Forbidden marks err with bus.ErrForbidden when Redis refused a command
// with NOPERM: the ACL user may not run it, or not on those keys.
func Forbidden(err error) error {
	var re redis.Error
	if err != nil && !errors.Is(err, bus.ErrForbidden) && errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOPERM") {
		return fmt.Errorf("%w: %w", bus.ErrForbidden, err)
	}
	return err
}

// Open returns a client of a redis://, rediss:// URL or of their
// +cluster and +sentinel forms, read as Parse reads them; parameters Parse
// does not know are left to the adapters and ignored here. For tools and
// tests that reach the server an adapter uses.
func Open(raw string) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	p := driver.NewParams(u)
	e := Parse(u, "redis", "rediss", p)
	p.Rest()
	if err := p.Err(); err != nil {
		return nil, err
	}
	return NewClient(e, 5*time.Second, 5*time.Second, 0, 0), nil
}
