package bus

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// OpenFunc builds a Broker from a parsed URL. It must honour ctx as the
// bound on dialing, and must not include the URL's password in errors.
type OpenFunc func(ctx context.Context, u *url.URL) (Broker, error)

var registry = struct {
	sync.RWMutex
	open map[string]OpenFunc
}{open: map[string]OpenFunc{}}

// Register makes Open build brokers for scheme. Adapters call it from an
// init function; importing an adapter package (for side effects, with
// `import _ "github.com/omnibus-mq/omnibus/adapters/kafka"`) registers its
// schemes. Register panics when scheme is registered twice.
func Register(scheme string, open OpenFunc) {
	scheme = strings.ToLower(scheme)
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.open[scheme]; dup {
		panic("bus: scheme registered twice: " + scheme)
	}
	registry.open[scheme] = open
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	s := make([]string, 0, len(registry.open))
	for k := range registry.open {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open connects to the broker named by rawURL, using the adapter registered
// for its scheme: mem://, amqp://, kafka://, redis:// and so on. The adapter
// package must be imported. Errors match ErrBadURL, ErrUnknownScheme,
// ErrUnreachable, ErrAuth or ErrForbidden with errors.Is, and never contain
// the URL's password.
func Open(ctx context.Context, rawURL string) (Broker, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	registry.RLock()
	open, ok := registry.open[u.Scheme]
	registry.RUnlock()
	if !ok {
		where := u.Redacted()
		if u.Opaque != "" {
			// "user:pass@host" (no "//") parses as scheme "user" with the
			// password in the opaque part, which Redacted leaves as it is.
			where = "a URL without \"//\""
		}
		return nil, fmt.Errorf("%w %q in %s (registered: %s; is the adapter package imported?)",
			ErrUnknownScheme, u.Scheme, where, strings.Join(Schemes(), ", "))
	}
	b, err := open(ctx, u)
	if err != nil {
		// An adapter's constructor returns a nil pointer with its error;
		// handed on as is, it would be a non-nil Broker.
		return nil, err
	}
	return b, nil
}

// misplacedAt reports whether a URL without user information holds an
// '@' where a user name and password ended up when they held an unescaped
// '/', '?' or '#': in the path or fragment, or in the query when the host
// holds a colon of its own (user:password, or a part of it).
func misplacedAt(u *url.URL) bool {
	if strings.Contains(u.Path, "@") || strings.Contains(u.Fragment, "@") || strings.Contains(u.Opaque, "@") {
		return true
	}
	h := u.Hostname()
	return strings.Contains(u.RawQuery, "@") && strings.Contains(h, ":") && !strings.Contains(h, ",") && !strings.HasPrefix(u.Host, "[")
}

// quoted matches the Go-quoted strings in net/url's errors.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// ParseURL parses a broker URL, reporting problems as ErrBadURL without
// echoing a password.
func ParseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the input, which may hold a password.
		reason := err.Error()
		if ue, ok := err.(*url.Error); ok {
			reason = ue.Err.Error()
		}
		if strings.Contains(rawURL, "@") {
			// The parser quotes the part it stumbled on, which is part of
			// the password when one holds an unescaped '/', '?' or '#'.
			reason = quoted.ReplaceAllString(reason, "(withheld)")
		}
		return nil, fmt.Errorf("%w: %s", ErrBadURL, reason)
	}
	if u.User == nil && misplacedAt(u) {
		// amqp://user:pa/ss@host parses as host "user:pa" and path
		// "/ss@host": echoing the URL would show part of the password.
		return nil, fmt.Errorf("%w: an '@' after the host: percent-encode '/', '?', '#' and '@' in the user name and password (%%2F, %%3F, %%23, %%40)", ErrBadURL)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: %s has no scheme (want e.g. mem://, amqp://, kafka://, redis://)", ErrBadURL, u.Redacted())
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}
