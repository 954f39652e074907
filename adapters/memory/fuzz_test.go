package memory_test

import (
	"testing"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/badinput"
)

// FuzzParseURL: parsing any mem:// URL never panics, fails with
// bus.ErrBadURL, and never shows the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"mem://", "mem://name", "mem://n?max_message_size=10", "mem://n?max_message_size=-1",
		"mem://n?max_message_size=0&x=1", "mem://u:p4ssword@n/p", "mem:opaque", "mem://n?max_message_size=99999999999999999999",
		"mem://u:" + badinput.Marker + "/x@n?bad=1", "mem://u:" + badinput.Marker + "x@n?max_message_size=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := bus.ParseURL(raw)
		if err != nil {
			badinput.CheckURLError(t, raw, err)
			return
		}
		u.Scheme = memory.Scheme
		name, opts, err := memory.ParseURL(u)
		badinput.CheckURLError(t, raw, err)
		if err == nil && (name != u.Host || opts.MaxMessageSize == 0 && u.Query().Has("max_message_size")) {
			t.Fatalf("%q: name %q, options %+v", raw, name, opts)
		}
	})
}
