package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestFlagsReportEveryProblem(t *testing.T) {
	err := run(context.Background(), []string{"-broker", "nope", "-reps", "0", "-size", "4", "-task-concurrency", "x"}, io.Discard, io.Discard)
	var ce *bus.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *bus.ConfigError", err)
	}
	if len(ce.Problems) != 4 {
		t.Fatalf("got %d problems, want 4: %v", len(ce.Problems), err)
	}
	for _, want := range []string{`"nope"`, "-reps", "-size 4", "-task-concurrency"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not named in %v", want, err)
		}
	}
}

func TestComparisonRatios(t *testing.T) {
	p := plans[1] // redis
	run := Run{Broker: "redis", Size: 1024, Phases: []Phase{
		{Contender: "omnibus", Role: "omnibus", Name: "publish", Rate: 90_000},
		{Contender: "go-redis", Role: "raw", Name: "publish", Rate: 100_000},
		{Contender: "watermill-redisstream", Role: "watermill", Name: "publish", Rate: 30_000},
		{Contender: "omnibus", Role: "omnibus", Name: "consume", Rate: 50_000},
		{Contender: "go-redis", Role: "raw", Name: "consume", Rate: 40_000},
		{Contender: "watermill-redisstream", Role: "watermill", Name: "consume", Rate: 5_000, Error: "boom"},
	}}
	var b strings.Builder
	writeComparison(&b, p, p.contenders, run, nil)
	out := b.String()
	for _, want := range []string{
		"| omnibus (omnibus) | 90.0k (90 % of go-redis) | 50.0k (125 % of go-redis) |",
		"| go-redis (raw) | 100.0k | 40.0k |",
		"| watermill-redisstream (watermill) | 30.0k (30 % of go-redis) | 5.00k (12 % of go-redis) |",
		"| **omnibus ÷ watermill** | 3.0× | 10.0× |",
		"error, watermill-redisstream / consume: boom",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestGoals(t *testing.T) {
	val := map[string]map[string]float64{
		"consume": {"omnibus": 50_000, "go-redis": 60_000, "watermill-redisstream": 4_000},
	}
	roles := map[string]string{"go-redis": "raw", "watermill-redisstream": "watermill", "omnibus": "omnibus"}
	best := func(phase, role string) (float64, string) {
		var v float64
		var who string
		for k, r := range roles {
			if r == role && val[phase][k] > v {
				v, who = val[phase][k], k
			}
		}
		return v, who
	}
	var b strings.Builder
	writeGoals(&b, "redis", val, best, 95, 100, 6.5)
	out := b.String()
	for _, want := range []string{
		"| omnibus ≥ 90 % of the best raw client (go-redis), consume | 83 % | no |",
		"| omnibus ≥ 90 % of the best raw client, end to end maximum | 95 % | yes |",
		"| omnibus ≥ 10× watermill-redisstream consuming, consume | 12.5× | yes |",
		"| omnibus e2e p99 < 5 ms at half its maximum | 6.50 ms | no |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
