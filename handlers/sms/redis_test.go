package sms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// roundTrips records what a client sends: one entry per round trip, a
// single command or a pipeline (MULTI/EXEC included).
type roundTrips struct {
	mu     sync.Mutex
	trips  [][]string
	missed bool // an EVALSHA found its script gone from Redis's cache
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		r.add(err, cmd)
		return err
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		r.add(err, cmds...)
		return err
	}
}

// add records a round trip. Whether a script was missing shows in the
// error next returned, or in a pipeline's commands: some clients (the
// Sentinel failover client) set a command's error only after the hooks.
func (r *roundTrips) add(err error, cmds ...redis.Cmder) {
	var trip []string
	noScript := func(err error) bool {
		return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
	}
	missed := noScript(err)
	for _, c := range cmds {
		trip = append(trip, fmt.Sprint(c.Args()...))
		missed = missed || noScript(c.Err())
	}
	r.mu.Lock()
	r.trips = append(r.trips, trip)
	r.missed = r.missed || missed
	r.mu.Unlock()
}

func (r *roundTrips) take() ([][]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, missed := r.trips, r.missed
	r.trips, r.missed = nil, false
	return t, missed
}

// cached runs setup and then f until f runs with every script it uses in
// Redis's cache, and returns the round trips of that run of f. A run can
// miss when the script is new to this Redis or when another test flushed
// the cache (redisstream's tests do); go-redis then adds an EVAL.
func (r *roundTrips) cached(t *testing.T, setup, f func()) [][]string {
	t.Helper()
	for range 10 {
		setup()
		r.take()
		f()
		if trips, missed := r.take(); !missed {
			return trips
		}
	}
	t.Fatal("Redis's script cache was flushed during each of 10 tries")
	return nil
}

func TestRedisSaveIsOneRoundTrip(t *testing.T) {
	c := redisClient(t)
	// The connection's handshake goes through the hooks too; it is done
	// here, before they count.
	if err := c.Ping(bg).Err(); err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	c.AddHook(trips)
	s := NewRedisStore(c)

	var phone string
	got := trips.cached(t, func() {
		phone = testPhone(t)
		cleanup(t, c, phone)
	}, func() { save(t, s, phone, "123456", time.Minute, time.Minute) })
	codeKey, lockKey := s.Keys(phone)
	if len(got) != 1 || len(got[0]) != 1 || !strings.HasPrefix(got[0][0], "evalsha") ||
		!strings.Contains(got[0][0], lockKey) || !strings.Contains(got[0][0], codeKey) {
		t.Fatalf("Save sent %q; want one round trip, one EVALSHA with both keys", got)
	}

	// Refused, it is one round trip too, and writes nothing.
	var err error
	got = trips.cached(t, func() {}, func() { err = s.Save(bg, phone, "654321", time.Minute, time.Minute) })
	if !errors.Is(err, ErrTooSoon) || len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("refused Save: %v after %q; want ErrTooSoon after one round trip", err, got)
	}

	// What a Redis client of another language finds.
	h, err := c.HGetAll(bg, codeKey).Result()
	if err != nil || h["code"] != "123456" || h["attempts"] != "0" {
		t.Fatalf("HGETALL %s = %v, %v; want code 123456, attempts 0", codeKey, h, err)
	}
	codeTTL, _ := c.PTTL(bg, codeKey).Result()
	lockTTL, _ := c.PTTL(bg, lockKey).Result()
	if codeTTL <= 0 || codeTTL > time.Minute || lockTTL <= 0 || lockTTL > time.Minute {
		t.Fatalf("PTTL: code %v, lock %v; want both in (0, 1m]", codeTTL, lockTTL)
	}
}

func TestRedisVerifyRoundTrips(t *testing.T) {
	c := redisClient(t)
	// The connection's handshake goes through the hooks too; it is done
	// here, before they count.
	if err := c.Ping(bg).Err(); err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	c.AddHook(trips)
	s := NewRedisStore(c)
	var phone string
	fresh := func() {
		phone = testPhone(t)
		cleanup(t, c, phone)
		save(t, s, phone, "123456", time.Minute, time.Minute)
	}

	got := trips.cached(t, fresh, func() { verify(t, s, phone, "000000", 5, ErrWrongCode) })
	if len(got) != 1 {
		t.Fatalf("a wrong guess took %d round trips (%q), want 1", len(got), got)
	}
	got = trips.cached(t, fresh, func() { verify(t, s, phone, "123456", 5, nil) })
	if len(got) != 2 {
		t.Fatalf("the right guess took %d round trips (%q), want 2: count and fetch, then consume", len(got), got)
	}
	if codeKey, _ := s.Keys(phone); c.Exists(bg, codeKey).Val() != 0 {
		t.Fatalf("%s still exists after the code was used", codeKey)
	}
}

func TestRedisLastGuessDropsTheCode(t *testing.T) {
	c := redisClient(t)
	s := NewRedisStore(c)
	phone := testPhone(t)
	cleanup(t, c, phone)
	save(t, s, phone, "123456", time.Minute, time.Minute)
	verify(t, s, phone, "000000", 1, ErrTooManyAttempts)
	codeKey, _ := s.Keys(phone)
	if h, _ := c.HGetAll(bg, codeKey).Result(); h["code"] != "" || h["attempts"] != "1" {
		t.Fatalf("after the last attempt %s = %v; want no code, attempts 1", codeKey, h)
	}
}

func TestRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer c.Close()
	s := NewRedisStore(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	phone := testPhone(t)
	for name, err := range map[string]error{
		"Save":    s.Save(ctx, phone, "123456", time.Minute, time.Minute),
		"Verify":  s.Verify(ctx, phone, "123456", 5),
		"Release": s.Release(ctx, phone, "123456"),
	} {
		if err == nil || errors.Is(err, ErrTooSoon) || errors.Is(err, ErrNoCode) || !strings.Contains(err.Error(), "redis") {
			t.Errorf("%s with Redis down = %v, want the connection error", name, err)
		}
	}
}

// On a Redis Cluster the phone is the hash tag of both keys, so that the
// scripts that name both touch one slot; elsewhere the names stay plain.
func TestRedisKeysOnCluster(t *testing.T) {
	plain := NewRedisStore(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}))
	if code, lock := plain.Keys("+15550100"); code != "sms_+15550100" || lock != "is_send_+15550100" {
		t.Errorf("standalone keys %q, %q", code, lock)
	}
	cluster := NewRedisStore(redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}))
	for _, phone := range []string{"+15550100", "+1555 0100", "x"} {
		code, lock := cluster.Keys(phone)
		if code != "sms_{"+phone+"}" || lock != "is_send_{"+phone+"}" {
			t.Errorf("cluster keys of %q: %q, %q", phone, code, lock)
		}
		if a, b := redisconn.Slot(code), redisconn.Slot(lock); a != b {
			t.Errorf("cluster keys of %q in slots %d and %d", phone, a, b)
		}
	}
	// A brace would end the hash tag early: refused.
	for _, phone := range []string{"}", "+1{555}0100"} {
		if err := cluster.Save(bg, phone, "123456", time.Minute, time.Minute); !errors.Is(err, ErrInvalidPhone) {
			t.Errorf("Save of %q on a cluster: %v, want ErrInvalidPhone", phone, err)
		}
	}
}
