package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	// Every adapter, for its URL scheme.
	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	_ "github.com/omnibus-mq/omnibus/adapters/memory"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	_ "github.com/omnibus-mq/omnibus/adapters/rocketmq"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

// A named broker: the local one scripts/brokers starts, unless the
// environment variable the tests read points elsewhere.
type namedBroker struct {
	name, env, def, prefix, scheme string
}

var namedBrokers = []namedBroker{
	{name: "memory", def: "mem://bench", scheme: "mem"},
	{name: "rabbitmq", env: "OMNIBUS_AMQP_URL", def: "amqp://guest:guest@127.0.0.1:5672/", scheme: "amqp"},
	{name: "redis", env: "OMNIBUS_REDIS_URL", def: "redis://127.0.0.1:6379/0", scheme: "redis"},
	{name: "kafka", env: "OMNIBUS_KAFKA_BROKERS", def: "127.0.0.1:9092", prefix: "kafka://", scheme: "kafka"},
	{name: "rocketmq", env: "OMNIBUS_ROCKETMQ_URL", def: "rocketmq://127.0.0.1:9876", scheme: "rocketmq"},
}

func (n namedBroker) url() string {
	v := n.def
	if n.env != "" {
		if e := strings.TrimSpace(os.Getenv(n.env)); e != "" {
			v = e
		}
	}
	return n.prefix + v
}

// targets turns the broker arguments into targets: URLs as given, names
// into their URLs, "all" into every named broker whose adapter is linked.
func targets(args []string) ([]bench.Target, error) {
	var ts []bench.Target
	add := func(t bench.Target) {
		for _, x := range ts {
			if x.URL == t.URL {
				return
			}
		}
		ts = append(ts, t)
	}
	for _, a := range args {
		for _, a := range splitTargets(a) {
			a = strings.TrimSpace(a)
			switch {
			case a == "":
			case a == "all":
				for _, n := range namedBrokers {
					if slices.Contains(bus.Schemes(), n.scheme) {
						add(bench.Target{Name: n.name, URL: n.url()})
					}
				}
			case strings.Contains(a, "://"):
				// NAME=URL names a target, to tell apart two URLs of
				// one broker (classic and quorum queues, say).
				name, rawURL := "", a
				if i, j := strings.Index(a, "="), strings.Index(a, "://"); i > 0 && i < j {
					name, rawURL = a[:i], a[i+1:]
				}
				u, err := bus.ParseURL(rawURL)
				if err != nil {
					return nil, err
				}
				if name == "" {
					name = targetName(u.Scheme)
				}
				add(bench.Target{Name: uniqueName(ts, name), URL: rawURL})
			default:
				i := slices.IndexFunc(namedBrokers, func(n namedBroker) bool { return n.name == a })
				if i < 0 {
					return nil, fmt.Errorf("unknown broker %q: want a URL or one of memory, rabbitmq, redis, kafka, rocketmq, all", hidePassword(a))
				}
				add(bench.Target{Name: a, URL: namedBrokers[i].url()})
			}
		}
	}
	return ts, nil
}

// splitTargets splits a comma-separated list of broker names and URLs. A
// URL may hold commas itself (kafka://h1:9092,h2:9092): a piece that is
// neither a name nor a URL belongs to the URL before it.
func splitTargets(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		t := strings.TrimSpace(p)
		known := t == "all" || strings.Contains(t, "://") ||
			slices.ContainsFunc(namedBrokers, func(n namedBroker) bool { return n.name == t })
		if !known && len(out) > 0 && strings.Contains(out[len(out)-1], "://") {
			out[len(out)-1] += "," + p
			continue
		}
		out = append(out, p)
	}
	return out
}

func uniqueName(ts []bench.Target, name string) string {
	taken := func(n string) bool {
		return slices.ContainsFunc(ts, func(t bench.Target) bool { return t.Name == n })
	}
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s-%d", name, i); !taken(n) {
			return n
		}
	}
}

func targetName(scheme string) string {
	switch scheme {
	case "mem":
		return "memory"
	case "amqp", "amqps":
		return "rabbitmq"
	case "redis", "rediss":
		return "redis"
	}
	return scheme
}

// brokerURL resolves a single broker argument of pub, sub and doctor.
func brokerURL(arg string) (string, error) {
	ts, err := targets([]string{arg})
	if err != nil {
		return "", err
	}
	if len(ts) != 1 {
		return "", fmt.Errorf("want one broker, got %q", arg)
	}
	return ts[0].URL, nil
}

// hidePassword returns an argument to echo in a message: without what
// could be a password, between the first ":" and the last "@" (as in
// "user:pass@host" written without a scheme), and with the password of
// every URL in it redacted.
func hidePassword(arg string) string {
	arg = bench.RedactText(arg)
	if at := strings.LastIndex(arg, "@"); at > 0 {
		if colon := strings.Index(arg[:at], ":"); colon >= 0 && !strings.Contains(arg[colon:at], "xxxxx") {
			arg = arg[:colon+1] + "xxxxx" + arg[at:]
		}
	}
	return arg
}
