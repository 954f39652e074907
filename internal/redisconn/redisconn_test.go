package redisconn

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus/driver"
)

func parse(t *testing.T, raw string) (Endpoint, []string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	params := driver.NewParams(u)
	e := Parse(u, "redis", "rediss", params)
	var probs []string
	for _, p := range params.Problems() {
		probs = append(probs, p.Error())
	}
	return e, probs
}

func TestParse(t *testing.T) {
	e, probs := parse(t, "rediss://app:s3cret@cache.example:6390/2")
	if len(probs) > 0 || e.Addr != "cache.example:6390" || e.Username != "app" || e.Password != "s3cret" || e.DB != 2 {
		t.Fatalf("got %+v, %v", e, probs)
	}
	if e.TLS == nil || e.TLS.ServerName != "cache.example" {
		t.Fatalf("TLS = %+v, want verification of cache.example", e.TLS)
	}
	e, probs = parse(t, "redis://127.0.0.1")
	if len(probs) > 0 || e.Addr != "127.0.0.1:6379" || e.TLS != nil || e.DB != 0 {
		t.Fatalf("defaults: got %+v, %v", e, probs)
	}
	e, probs = parse(t, "redis://:7000")
	if len(probs) > 0 || e.Addr != "localhost:7000" {
		t.Fatalf("port only: got %+v, %v", e, probs)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, probs := parse(t, "http://u:s3cret@h/x")
	if len(probs) != 2 {
		t.Fatalf("got %d problems, want 2 (scheme, path): %v", len(probs), probs)
	}
	if all := strings.Join(probs, "; "); strings.Contains(all, "s3cret") {
		t.Fatalf("the password shows: %s", all)
	}
}

func TestClientNeverResends(t *testing.T) {
	o := Client(Endpoint{Addr: "h:1", DB: 3}, 2*time.Second, 3*time.Second, 7)
	if o.MaxRetries != -1 || o.DialerRetries != 1 || o.DialTimeout != 2*time.Second ||
		o.ReadTimeout != 3*time.Second || o.WriteTimeout != 3*time.Second || o.PoolSize != 7 || o.DB != 3 || !o.ContextTimeoutEnabled {
		t.Fatalf("got %+v", o)
	}
}

func TestSlot(t *testing.T) {
	// CRC16/XMODEM of "123456789" is 0x31C3; "foo" is slot 12182 in the
	// Redis Cluster specification's examples.
	for key, want := range map[string]int{
		"123456789": 0x31C3,
		"foo":       12182,
		"{foo}.dlq": 12182,
		"a{foo}b":   12182,
		"{}foo":     Slot("{}foo"),
		"x{}{foo}":  Slot("x{}{foo}"),
		"":          0,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	for _, c := range []struct{ key, tag string }{
		{"orders", "orders"}, {"{orders}.dlq", "orders"}, {"a{b}c{d}", "b"},
		{"{}x", "{}x"}, {"a{b", "a{b"}, {"a}b", "a}b"},
	} {
		if got := HashTag(c.key); got != c.tag {
			t.Errorf("HashTag(%q) = %q, want %q", c.key, got, c.tag)
		}
	}
	for _, key := range []string{"orders", "{orders}.dlq", "a{b", "tasks:sms"} {
		k, ok := Tagged("omnibus:retry:", key, ":g")
		if !ok || Slot(k) != Slot(key) {
			t.Errorf("Tagged(%q) = %q, %v: slot %d, want %d", key, k, ok, Slot(k), Slot(key))
		}
	}
	for _, key := range []string{"a}b", "{}x", "x{}y", "{}x{y}"} {
		if k, ok := Tagged("p", key, ""); ok {
			t.Errorf("Tagged(%q) = %q, want no key: the hash tag holds a }", key, k)
		}
	}
}
