package main

import (
	"bytes"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// TestNoPasswordInOutput runs doctor, pub, sub and bench against each
// broker as the password-protected user of scripts/brokers, with the right
// password, a wrong one, and on a topic the user may not use, and checks
// that the password appears nowhere: not in stdout or stderr, not in the
// logs, not in bench's results.json, summary.md or report.html (whose
// command line is taken from os.Args).
func TestNoPasswordInOutput(t *testing.T) {
	sec := brokertest.Secure(t)
	type target struct {
		name, addr string
		url        func(password string) string
	}
	for _, tg := range []target{
		{"rabbitmq", sec.AMQPAddr, func(pw string) string {
			return (&url.URL{Scheme: "amqp", User: url.UserPassword(sec.User, pw), Host: sec.AMQPAddr, Path: "/" + sec.AMQPVhost}).String()
		}},
		{"redis", sec.RedisAddr, func(pw string) string {
			return (&url.URL{Scheme: "redis", User: url.UserPassword(sec.User, pw), Host: sec.RedisAddr, Path: "/0"}).String()
		}},
		{"kafka", sec.KafkaSASL, func(pw string) string {
			return (&url.URL{Scheme: "kafka", User: url.UserPassword(sec.User, pw), Host: sec.KafkaSASL, RawQuery: "sasl=scram-sha-512"}).String()
		}},
	} {
		t.Run(tg.name, func(t *testing.T) {
			sec.Require(t, tg.name, tg.addr)
			var logs bytes.Buffer
			prev := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			defer slog.SetDefault(prev)
			args := os.Args
			defer func() { os.Args = args }()

			wrong := "wrong-" + sec.Password
			check := func(what, text string) {
				t.Helper()
				if strings.Contains(text, sec.Password) {
					t.Errorf("%s shows the password:\n%s", what, text)
				}
			}
			for _, tc := range []struct {
				name, password string
				ok             bool
			}{{"right password", sec.Password, true}, {"wrong password", wrong, false}} {
				raw := tg.url(tc.password)

				code, out, errOut := omnibus(t, "", "doctor", raw)
				if (code == 0) != tc.ok {
					t.Errorf("%s: doctor exit %d:\n%s%s", tc.name, code, out, errOut)
				}
				check(tc.name+": doctor", out+errOut)

				dir := filepath.Join(t.TempDir(), "bench")
				os.Args = []string{"omnibus", "bench", "-out", dir, raw}
				code, out, errOut = omnibus(t, "", "bench", "-sizes", "64", "-producers", "1", "-batch", "10",
					"-warmup", "100ms", "-duration", "200ms", "-reps", "1", "-fractions", "0.5", "-progress", "off",
					"-out", dir, raw)
				if tc.ok && code != 0 {
					t.Errorf("%s: bench exit %d:\n%s%s", tc.name, code, out, errOut)
				}
				check(tc.name+": bench", out+errOut)
				files, _ := filepath.Glob(filepath.Join(dir, "*"))
				if tc.ok && len(files) == 0 {
					t.Errorf("%s: bench wrote nothing in %s", tc.name, dir)
				}
				for _, f := range files {
					data, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					check(tc.name+": "+filepath.Base(f), string(data))
				}
			}

			// A topic the user may not use.
			code, out, errOut := omnibus(t, "", "pub", tg.url(sec.Password), "forbidden-topic", "x")
			if code == 0 || !strings.Contains(out+errOut, "permission denied") {
				t.Errorf("pub to a forbidden topic: exit %d:\n%s%s", code, out, errOut)
			}
			check("pub to a forbidden topic", out+errOut)
			code, out, errOut = omnibus(t, "", "sub", "-n", "1", "-timeout", "5s", tg.url(sec.Password), "forbidden-topic")
			if code == 0 || !strings.Contains(out+errOut, "permission denied") {
				t.Errorf("sub to a forbidden topic: exit %d:\n%s%s", code, out, errOut)
			}
			check("sub to a forbidden topic", out+errOut)
			check("the logs", logs.String())
			t.Logf("pub to a forbidden topic: %s", strings.TrimSpace(out+errOut))
		})
	}
}

// An argument that is no URL and no broker name is echoed without what
// could be its password.
func TestUnknownBrokerHidesPassword(t *testing.T) {
	const secret = "s3cret-Pa55"
	for _, arg := range []string{"guest:" + secret + "@localhost:5672", "rabbit:" + secret + "@h", "amqp:/u:" + secret + "@h"} {
		for _, cmd := range []string{"doctor", "pub", "sub", "bench"} {
			args := []string{cmd, arg, "topic"}
			if cmd == "doctor" || cmd == "bench" {
				args = args[:2]
			}
			code, out, errOut := omnibus(t, "", args...)
			if code == 0 || strings.Contains(out+errOut, secret) {
				t.Errorf("omnibus %s %s: exit %d, output shows the password or no failure:\n%s%s", cmd, arg, code, out, errOut)
			}
		}
	}
}
