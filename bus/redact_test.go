package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
)

// Open's errors never show the password, whatever shape the URL has,
// including "user:pass@host" without a scheme, and match the sentinel.
func TestOpenErrorsHidePasswordAnyShape(t *testing.T) {
	const secret = "s3cret-Pa55"
	for raw, want := range map[string]error{
		"guest:" + secret + "@localhost:5672":    bus.ErrBadURL, // no "//": an "@" with no user info
		"nosuch://guest:" + secret + "@h:1/":     bus.ErrUnknownScheme,
		"//guest:" + secret + "@h:1/":            bus.ErrBadURL,
		"amqp://guest:" + secret + "@h:badport/": bus.ErrBadURL,
		"amqp://guest:" + secret + "@h/%zz":      bus.ErrBadURL,
		"amqp://guest:" + secret + " x@h/":       bus.ErrBadURL,
		"amqp://guest:" + secret + "@h:1/\x7f":   bus.ErrBadURL,
	} {
		_, err := bus.Open(context.Background(), raw)
		if !errors.Is(err, want) {
			t.Errorf("Open(%q) = %v; want %v", raw, err, want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%q) shows the password: %v", raw, err)
		}
	}
}
