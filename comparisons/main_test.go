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
