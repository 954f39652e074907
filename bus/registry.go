package bus

import (
	"context"
	"fmt"
	"net/url"
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
	return open(ctx, u)
}

// ParseURL parses a broker URL, reporting problems as ErrBadURL without
// echoing a password.
func ParseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the input, which may hold a password.
		var reason error = err
		if ue, ok := err.(*url.Error); ok {
			reason = ue.Err
		}
		return nil, fmt.Errorf("%w: %v", ErrBadURL, reason)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: %s has no scheme (want e.g. mem://, amqp://, kafka://, redis://)", ErrBadURL, u.Redacted())
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}
