package driver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Params reads the query parameters of a broker URL. An adapter reads
// each parameter it takes with one of the typed methods, then calls Err,
// which reports every problem at once: values that do not parse, a
// parameter given under its name and an alias, and parameters nothing
// read. No problem quotes the URL's password.
//
// The parameters every backend shares have one spelling everywhere:
//
//	dial_timeout      bound on connecting, a Go duration such as 5s (Duration)
//	max_message_size  the largest bus.Message.Size Publish accepts, in bytes (Int)
//	tls               true: connect with TLS, where the scheme does not say (TLS)
//	tls_ca            PEM file of the roots that verify the server, instead
//	                  of the system's; alias cacertfile
//	tls_cert          PEM file of a client certificate; alias certfile
//	tls_key           PEM file of its private key; alias keyfile
//	tls_server_name   the name the server's certificate must have (default:
//	                  the host); alias server_name_indication
//	tls_skip_verify   true: do not verify the server's certificate (tests only)
//
// The aliases are RabbitMQ's own URI parameters, accepted everywhere.
type Params struct {
	u        *url.URL
	q        url.Values
	read     map[string]bool
	problems []error
}

// NewParams returns the Params of u's query.
func NewParams(u *url.URL) *Params {
	return &Params{u: u, q: u.Query(), read: map[string]bool{}}
}

// Problemf records a problem of the URL that is not a parameter's (a
// path where none belongs, say).
func (p *Params) Problemf(format string, args ...any) {
	p.problems = append(p.problems, fmt.Errorf(format, args...))
}

// Has reports whether name, or one of its aliases, is given.
func (p *Params) Has(name string, aliases ...string) bool {
	for _, n := range append([]string{name}, aliases...) {
		if p.q.Has(n) {
			return true
		}
	}
	return false
}

// lookup returns the value of name or of one of its aliases (the last
// given), marking them read. The key is the name it was given under.
func (p *Params) lookup(name string, aliases ...string) (v, key string, ok bool) {
	for _, n := range append([]string{name}, aliases...) {
		p.read[n] = true
		vs, has := p.q[n]
		if !has {
			continue
		}
		if ok {
			p.Problemf("%s and %s are the same parameter: give one", key, n)
			continue
		}
		v, key, ok = vs[len(vs)-1], n, true
	}
	return v, key, ok
}

// String reads a text parameter into dst, when given.
func (p *Params) String(dst *string, name string, aliases ...string) {
	if v, _, ok := p.lookup(name, aliases...); ok {
		*dst = v
	}
}

// Int reads a whole number of at least least into dst, when given, and
// reports whether it did.
func (p *Params) Int(dst *int, name string, least int) bool {
	v, key, ok := p.lookup(name)
	if !ok {
		return false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		p.Problemf("%s=%q: want a whole number of at least %d", key, v, least)
		return false
	}
	*dst = n
	return true
}

// Duration reads a positive Go duration ("250ms", "30s") into dst, when
// given. With seconds set it also takes a plain number of seconds, as
// kombu's transport options are written.
func (p *Params) Duration(dst *time.Duration, name string, seconds ...bool) {
	v, key, ok := p.lookup(name)
	if !ok {
		return
	}
	if len(seconds) > 0 && seconds[0] {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f < 1e9 {
			*dst = time.Duration(f * float64(time.Second))
			return
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		p.Problemf("%s=%q: want a positive duration such as 250ms or 30s", key, v)
		return
	}
	*dst = d
}

// Bool reads true or false into dst, when given.
func (p *Params) Bool(dst *bool, name string) {
	v, key, ok := p.lookup(name)
	if !ok {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.Problemf("%s=%q: want true or false", key, v)
		return
	}
	*dst = b
}

// TLS reads the TLS parameters and returns the client configuration, or
// nil for a plain connection. byScheme says the URL's scheme asks for TLS
// (amqps://, rediss://); flag says the backend takes tls=true instead
// (kafka://), where any TLS parameter turns TLS on too. Without either, a
// TLS parameter is a problem. Verification is on unless tls_skip_verify
// says otherwise, against the system's roots unless tls_ca names others.
func (p *Params) TLS(byScheme, flag bool) *tls.Config {
	on := byScheme
	if flag {
		p.Bool(&on, "tls")
		on = on || byScheme
	}
	var ca, cert, key, name string
	var skip bool
	p.String(&ca, "tls_ca", "cacertfile")
	p.String(&cert, "tls_cert", "certfile")
	p.String(&key, "tls_key", "keyfile")
	p.String(&name, "tls_server_name", "server_name_indication")
	p.Bool(&skip, "tls_skip_verify")
	given := ca != "" || cert != "" || key != "" || name != "" || skip
	if !on && given {
		if !flag {
			p.Problemf("TLS parameters need a TLS scheme (%ss://)", p.u.Scheme)
			return nil
		}
		on = true
	}
	if !on {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name, InsecureSkipVerify: skip}
	if cfg.ServerName == "" {
		cfg.ServerName = p.u.Hostname()
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			p.Problemf("tls_ca: %v", err)
		case !pool.AppendCertsFromPEM(pem):
			p.Problemf("tls_ca: %s holds no PEM certificate", ca)
		default:
			cfg.RootCAs = pool
		}
	}
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			p.Problemf("tls_cert, tls_key: %v", err)
		} else {
			cfg.Certificates = []tls.Certificate{pair}
		}
	case cert != "" || key != "":
		p.Problemf("tls_cert and tls_key go together")
	}
	return cfg
}

// Rest returns the parameters nothing read, and counts them read: for
// an adapter that hands them on to its client library.
func (p *Params) Rest() url.Values {
	rest := url.Values{}
	for k, vs := range p.q {
		if !p.read[k] {
			rest[k] = vs
			p.read[k] = true
		}
	}
	return rest
}

// Problems returns the problems found so far, with one for each
// parameter nothing read.
func (p *Params) Problems() []error {
	out := append([]error(nil), p.problems...)
	for k := range p.q {
		if !p.read[k] {
			out = append(out, fmt.Errorf("unknown parameter %q", k))
		}
	}
	return out
}

// Err returns nil, or every problem of the URL as a *bus.ConfigError
// wrapped with bus.ErrBadURL and the URL without its password. extra are
// problems found afterwards (by the adapter's Options.Validate, say).
func (p *Params) Err(extra ...error) error {
	all := append(p.Problems(), extra...)
	if len(all) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", bus.ErrBadURL, p.u.Redacted(), &bus.ConfigError{Problems: all})
}

// ConfigProblems returns the problems inside err when it is a
// *bus.ConfigError, or err itself, for Params.Err's extra.
func ConfigProblems(err error) []error {
	if err == nil {
		return nil
	}
	if ce, ok := err.(*bus.ConfigError); ok {
		return ce.Problems
	}
	return []error{err}
}
