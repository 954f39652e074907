package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/handlers/sms"
)

// countingConn counts the writes a client makes: go-redis writes a
// command, or a whole pipeline, with one write and then waits for the
// replies, so writes are round trips.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// PipelineResult is one way of sending n commands.
type PipelineResult struct {
	Mode          string  `json:"mode"`
	Commands      int     `json:"commands"`
	RoundTrips    float64 `json:"round_trips_per_op"`
	P50us         float64 `json:"latency_p50_us"`
	P99us         float64 `json:"latency_p99_us"`
	OpsPerSec     float64 `json:"ops_per_s"`
	CommandsPerSe float64 `json:"commands_per_s"`
	Error         string  `json:"error,omitempty"`
}

type pipelineMode struct {
	name string
	n    int
	op   func(ctx context.Context, c *redis.Client, store *sms.RedisStore, phone string) error
}

func setexOneByOne(n int) func(context.Context, *redis.Client, *sms.RedisStore, string) error {
	return func(ctx context.Context, c *redis.Client, _ *sms.RedisStore, phone string) error {
		for i := range n {
			if err := c.Do(ctx, "SETEX", key(phone, i, n), 300, "123456").Err(); err != nil {
				return err
			}
		}
		return nil
	}
}

func setexPipelined(n int, tx bool) func(context.Context, *redis.Client, *sms.RedisStore, string) error {
	return func(ctx context.Context, c *redis.Client, _ *sms.RedisStore, phone string) error {
		fill := func(p redis.Pipeliner) error {
			for i := range n {
				p.Do(ctx, "SETEX", key(phone, i, n), 300, "123456")
			}
			return nil
		}
		var err error
		if tx {
			_, err = c.TxPipelined(ctx, fill)
		} else {
			_, err = c.Pipelined(ctx, fill)
		}
		return err
	}
}

// key names the code and lock keys of the pair as the SMS service does,
// and numbered keys for longer runs.
func key(phone string, i, n int) string {
	if n == 2 {
		if i == 0 {
			return sms.CodeKey(phone)
		}
		return sms.LockKey(phone)
	}
	return "cmp_" + phone + "_" + strconv.Itoa(i)
}

// pipelines measures the SMS service's Redis claim: storing the code and
// the resend lock (two SETEX) pipelined in one round trip versus one by
// one, also as MULTI/EXEC and as the Lua script handlers/sms uses, and
// 10 and 100 SETEX one by one versus pipelined. Latency is measured from
// one goroutine, throughput from 16.
func pipelines(ctx context.Context, rawURL string, ops int, conc time.Duration) ([]PipelineResult, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var writes atomic.Int64
	d := &net.Dialer{Timeout: 5 * time.Second}
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, writes: &writes}, nil
	}
	o.PoolSize = 32
	c := redis.NewClient(o)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return nil, err
	}
	store := sms.NewRedisStore(c)
	modes := []pipelineMode{
		{"SETEX pair, one by one", 2, setexOneByOne(2)},
		{"SETEX pair, pipelined", 2, setexPipelined(2, false)},
		{"SETEX pair, MULTI/EXEC", 2, setexPipelined(2, true)},
		{"code + lock, Lua script (handlers/sms)", 2, func(ctx context.Context, c *redis.Client, s *sms.RedisStore, phone string) error {
			// A fresh phone each time, so the lock never refuses.
			return s.Save(ctx, phone, "123456", 5*time.Minute, time.Minute)
		}},
		{"10 SETEX, one by one", 10, setexOneByOne(10)},
		{"10 SETEX, pipelined", 10, setexPipelined(10, false)},
		{"100 SETEX, one by one", 100, setexOneByOne(100)},
		{"100 SETEX, pipelined", 100, setexPipelined(100, false)},
	}
	run := time.Now().UnixNano()
	var out []PipelineResult
	for mi, m := range modes {
		res := PipelineResult{Mode: m.name, Commands: m.n}
		phone := func(i int) string { return fmt.Sprintf("+1555%d%d%07d", run%1000, mi, i) }
		// Warm the connection and the script cache.
		_ = m.op(ctx, c, store, phone(-1))
		lat := make([]time.Duration, 0, ops)
		before := writes.Load()
		for i := range ops {
			t := time.Now()
			if err := m.op(ctx, c, store, phone(i)); err != nil {
				res.Error = err.Error()
				break
			}
			lat = append(lat, time.Since(t))
		}
		if len(lat) > 0 {
			res.RoundTrips = float64(writes.Load()-before) / float64(len(lat))
			slices.Sort(lat)
			res.P50us = float64(lat[len(lat)/2].Microseconds())
			res.P99us = float64(lat[len(lat)*99/100].Microseconds())
		}
		// Throughput: 16 goroutines for conc.
		var done atomic.Int64
		tctx, cancel := context.WithTimeout(ctx, conc)
		var wg sync.WaitGroup
		start := time.Now()
		for g := range 16 {
			wg.Go(func() {
				for i := 0; tctx.Err() == nil; i++ {
					if err := m.op(tctx, c, store, phone(ops+g*10_000_000+i)); err != nil {
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		cancel()
		el := time.Since(start).Seconds()
		res.OpsPerSec = float64(done.Load()) / el
		res.CommandsPerSe = res.OpsPerSec * float64(m.n)
		out = append(out, res)
		// The keys expire in minutes; delete them now.
		var keys []string
		iter := c.Scan(ctx, 0, fmt.Sprintf("*+1555%d%d*", run%1000, mi), 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 1000 {
				c.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
	}
	return out, nil
}

func writePipelines(w io.Writer, res []PipelineResult) {
	fmt.Fprintf(w, "\n## The SMS service's Redis claim: pipelined vs one by one\n\n")
	fmt.Fprintf(w, "Round trips are the client's writes per operation (go-redis writes a pipeline at once); latency over sequential operations from one goroutine; throughput from 16 goroutines (see the command for counts and times).\n\n")
	fmt.Fprintln(w, "| operation | commands | round trips | p50 µs | p99 µs | ops/s (16 goroutines) | commands/s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range res {
		e := ""
		if r.Error != "" {
			e = " (error: " + r.Error + ")"
		}
		fmt.Fprintf(w, "| %s%s | %d | %.2f | %.0f | %.0f | %s | %s |\n", r.Mode, e, r.Commands, r.RoundTrips, r.P50us, r.P99us, rate(r.OpsPerSec), rate(r.CommandsPerSe))
	}
}
