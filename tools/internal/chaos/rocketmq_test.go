package chaos_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/omnibus-mq/omnibus/tools/internal/chaos"
)

// TestRocketMQVersion: only installs that scripts/brokers finished count,
// the newest by default.
func TestRocketMQVersion(t *testing.T) {
	state := t.TempDir()
	for v, complete := range map[string]bool{"5.4.0": true, "5.5.0": true, "5.6.0": false} {
		lib := filepath.Join(state, "rocketmq", v, "lib")
		if err := os.MkdirAll(lib, 0o755); err != nil {
			t.Fatal(err)
		}
		if complete {
			if err := os.WriteFile(filepath.Join(lib, ".complete"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []struct{ want, got string }{{"", "5.5.0"}, {"5.4.0", "5.4.0"}, {"5.5.0", "5.5.0"}} {
		v, err := chaos.RocketMQVersion(state, c.want)
		if err != nil || v != c.got {
			t.Errorf("RocketMQVersion(%q) = %q, %v; want %q", c.want, v, err, c.got)
		}
	}
	if v, err := chaos.RocketMQVersion(state, "5.6.0"); err == nil {
		t.Errorf("RocketMQVersion(5.6.0) = %q, want an error: its install did not finish", v)
	}
	if v, err := chaos.RocketMQVersion(t.TempDir(), ""); err == nil {
		t.Errorf("RocketMQVersion of an empty state dir = %q, want an error", v)
	}
}
