// Package redisconn holds what the Redis-based adapters (redisstream and
// kombu) share: reading the server's address, credentials and database
// from a redis:// style URL, and the go-redis client options.
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
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Endpoint is a Redis server and how to log in to it.
type Endpoint struct {
	Addr     string
	Username string
	Password string
	DB       int
	TLS      *tls.Config
}

// Parse reads u's scheme (scheme, or schemeTLS for TLS), host and port
// (default port 6379), user info, database number (the path) and the TLS
// parameters common to every backend (see driver.Params: with schemeTLS,
// verification against the system's roots unless tls_ca names others).
// Each problem goes to p.
func Parse(u *url.URL, scheme, schemeTLS string, p *driver.Params) Endpoint {
	var e Endpoint
	add := p.Problemf
	switch u.Scheme {
	case scheme, schemeTLS:
	default:
		add("scheme %q is not %s or %s", u.Scheme, scheme, schemeTLS)
	}
	e.TLS = p.TLS(u.Scheme == schemeTLS, false)
	if u.Opaque != "" {
		add("want %s://host:port", u.Scheme)
	}
	if h := u.Hostname(); h != "" {
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		e.Addr = net.JoinHostPort(h, port)
	} else if u.Port() != "" {
		e.Addr = net.JoinHostPort("localhost", u.Port())
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			add("path %q: want /<database number>", u.Path)
		}
		e.DB = n
	}
	return e
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

// Client returns the go-redis options of one client of e: no command is
// sent twice behind the caller's back (MaxRetries -1: a resent write
// could apply twice), a dial is tried once within dial, reads and writes
// are bounded by rw and by the caller's context, and no maintenance
// notification workers start (they are for Redis Enterprise and Cloud
// endpoints).
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

// Server is what Probe learned of a Redis server.
type Server struct {
	Version string // redis_version, "" when INFO was refused
	Mode    string // redis_mode: standalone, cluster or sentinel
	// Persistent: appendonly yes with appendfsync always or everysec, as
	// CONFIG GET reports it; false too when CONFIG is refused (ACLs,
	// managed services), since persistence is then unknown.
	Persistent bool
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
// credentials (failures mapped by DialError), and reads its version, mode
// and persistence settings.
func Probe(ctx context.Context, rdb *redis.Client, e Endpoint, dial time.Duration, name string) (Server, error) {
	ctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	var s Server
	if err := rdb.Ping(ctx).Err(); err != nil {
		return s, DialError(err, e, name)
	}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		s.Version, s.Mode = infoField(info, "redis_version"), infoField(info, "redis_mode")
	}
	if cfg, err := rdb.ConfigGet(ctx, "append*").Result(); err == nil {
		s.Persistent = cfg["appendonly"] == "yes" && (cfg["appendfsync"] == "always" || cfg["appendfsync"] == "everysec")
	}
	return s, nil
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
			return fmt.Errorf("%w: redis %s as %q: %v", bus.ErrAuth, e.Addr, e.Username, err)
		}
	}
	var re redis.Error
	if errors.As(err, &re) {
		return Forbidden(fmt.Errorf("%s: connecting to %s: %w", name, e.Addr, err))
	}
	return fmt.Errorf("%w: redis %s: %v", bus.ErrUnreachable, e.Addr, err)
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
