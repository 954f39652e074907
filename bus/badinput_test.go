package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
)

// A password with an unescaped '/', '?' or '#' is an ErrBadURL whose text
// holds no part of it, whether or not the rest parses; URLs with an '@'
// in their query stay valid.
func TestParseURLPasswordWithDelimiters(t *testing.T) {
	for _, raw := range []string{
		"amqp://user:pa/ss-Secret@h/", "amqp://user:pa?ss-Secret@h", "amqp://user:pa#ss-Secret@h",
		"amqp://user:1234/ss-Secret@h:5672/", "amqp://user:12#ss-Secret@h", "amqp://user:Secret:?x@h",
		"redis://:pa%zzSecret@h", "amqp://user:Secret/x@",
	} {
		_, err := bus.ParseURL(raw)
		if !errors.Is(err, bus.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", raw, err)
			continue
		}
		for _, part := range []string{"Secret", ":pa", `"pa`, "1234", ":12", "%zz"} {
			if strings.Contains(err.Error(), part) {
				t.Errorf("ParseURL(%q): %v shows %q", raw, err, part)
			}
		}
	}
	for _, raw := range []string{"kafka://h1:9092,h2:9092?client_id=me@example", "amqp://u:p%2Fw@h/", "redis://h:6379/0?x=a@b"} {
		if _, err := bus.ParseURL(raw); err != nil {
			t.Errorf("ParseURL(%q) = %v, want nil", raw, err)
		}
	}
}
