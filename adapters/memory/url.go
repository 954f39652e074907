package memory

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Scheme is the URL scheme of the memory backend: mem://NAME, where NAME
// (default "default") names a broker shared by every bus.Open of the same
// URL in the process.
//
// Query parameters:
//
//	max_message_size  bytes; default DefaultMaxMessageSize, -1 for none
const Scheme = "mem"

func init() { bus.Register(Scheme, open) }

var named = struct {
	sync.Mutex
	brokers map[string]*namedBroker
}{brokers: map[string]*namedBroker{}}

type namedBroker struct {
	b    *Broker
	opts Options
}

// Shared returns the process-wide broker of the given name, starting it
// with opts when it does not exist yet. It fails with bus.ErrBadConfig when
// the broker exists with other options.
func Shared(name string, opts Options) (*Broker, error) {
	if name == "" {
		name = "default"
	}
	named.Lock()
	defer named.Unlock()
	if nb, ok := named.brokers[name]; ok {
		if nb.opts != opts {
			return nil, fmt.Errorf("%w: memory broker %q is already running with other options", bus.ErrBadConfig, name)
		}
		return nb.b, nil
	}
	b := New(opts)
	named.brokers[name] = &namedBroker{b: b, opts: opts}
	return b, nil
}

// forget removes a closed broker from the names, so the next Open of its
// URL starts a new one.
func forget(b *Broker) {
	named.Lock()
	defer named.Unlock()
	for name, nb := range named.brokers {
		if nb.b == b {
			delete(named.brokers, name)
		}
	}
}

// ParseURL returns the broker name and options of a mem:// URL.
func ParseURL(u *url.URL) (name string, opts Options, err error) {
	if u.Scheme != Scheme {
		return "", opts, fmt.Errorf("%w: scheme %q is not %s", bus.ErrBadURL, u.Scheme, Scheme)
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return "", opts, fmt.Errorf("%w: %s: %v", bus.ErrBadURL, u.Redacted(), errNoName)
	}
	p := driver.NewParams(u)
	if p.Int(&opts.MaxMessageSize, "max_message_size", -1) && opts.MaxMessageSize == 0 {
		p.Problemf("max_message_size=0: want a positive byte count, or -1 for none")
	}
	if err := p.Err(); err != nil {
		return "", Options{}, err
	}
	return u.Host, opts, nil
}

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	name, opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	b, err := Shared(name, opts)
	if err != nil {
		return nil, err
	}
	return b.Connect(), nil
}
