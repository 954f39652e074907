// Package redisconn holds what the Redis-based adapters (redisstream and
// kombu) share: reading the server's address, credentials and database
// from a redis:// style URL, and the go-redis client options.
package redisconn

import (
	"crypto/tls"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

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
