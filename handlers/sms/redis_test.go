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
)

// roundTrips records what a client sends: one entry per round trip, a
// single command or a pipeline (MULTI/EXEC included).
type roundTrips struct {
	mu    sync.Mutex
	trips [][]string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.add(cmd)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.add(cmds...)
		return next(ctx, cmds)
	}
}

func (r *roundTrips) add(cmds ...redis.Cmder) {
	var trip []string
	for _, c := range cmds {
		trip = append(trip, fmt.Sprint(c.Args()...))
	}
	r.mu.Lock()
	r.trips = append(r.trips, trip)
	r.mu.Unlock()
}

func (r *roundTrips) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.trips
	r.trips = nil
	return t
}

func TestRedisSaveIsOneRoundTrip(t *testing.T) {
	c := redisClient(t)
	trips := &roundTrips{}
	c.AddHook(trips)
	s := NewRedisStore(c)
	warm := testPhone(t)
	cleanup(t, c, warm)
	// The first Save may load the script into Redis's cache.
	save(t, s, warm, "000000", time.Minute, time.Minute)
	trips.take()

	phone := testPhone(t)
	cleanup(t, c, phone)
	save(t, s, phone, "123456", time.Minute, time.Minute)
	got := trips.take()
	if len(got) != 1 || len(got[0]) != 1 || !strings.HasPrefix(got[0][0], "evalsha") ||
		!strings.Contains(got[0][0], LockKey(phone)) || !strings.Contains(got[0][0], CodeKey(phone)) {
		t.Fatalf("Save sent %q; want one round trip, one EVALSHA with both keys", got)
	}

	// Refused, it is one round trip too, and writes nothing.
	err := s.Save(bg, phone, "654321", time.Minute, time.Minute)
	if got := trips.take(); !errors.Is(err, ErrTooSoon) || len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("refused Save: %v after %q; want ErrTooSoon after one round trip", err, got)
	}

	// What a Redis client of another language finds.
	h, err := c.HGetAll(bg, CodeKey(phone)).Result()
	if err != nil || h["code"] != "123456" || h["attempts"] != "0" {
		t.Fatalf("HGETALL %s = %v, %v; want code 123456, attempts 0", CodeKey(phone), h, err)
	}
	codeTTL, _ := c.PTTL(bg, CodeKey(phone)).Result()
	lockTTL, _ := c.PTTL(bg, LockKey(phone)).Result()
	if codeTTL <= 0 || codeTTL > time.Minute || lockTTL <= 0 || lockTTL > time.Minute {
		t.Fatalf("PTTL: code %v, lock %v; want both in (0, 1m]", codeTTL, lockTTL)
	}
}

func TestRedisVerifyRoundTrips(t *testing.T) {
	c := redisClient(t)
	trips := &roundTrips{}
	c.AddHook(trips)
	s := NewRedisStore(c)
	phone := testPhone(t)
	cleanup(t, c, phone)
	save(t, s, phone, "123456", time.Minute, time.Minute)
	verify(t, s, phone, "000000", 5, ErrWrongCode) // loads the scripts
	trips.take()

	verify(t, s, phone, "000000", 5, ErrWrongCode)
	if got := trips.take(); len(got) != 1 {
		t.Fatalf("a wrong guess took %d round trips (%q), want 1", len(got), got)
	}
	verify(t, s, phone, "123456", 5, nil)
	if got := trips.take(); len(got) != 2 {
		t.Fatalf("the right guess took %d round trips (%q), want 2: count and fetch, then consume", len(got), got)
	}
	if n, _ := c.Exists(bg, CodeKey(phone)).Result(); n != 0 {
		t.Fatalf("%s still exists after the code was used", CodeKey(phone))
	}
}

func TestRedisLastGuessDropsTheCode(t *testing.T) {
	c := redisClient(t)
	s := NewRedisStore(c)
	phone := testPhone(t)
	cleanup(t, c, phone)
	save(t, s, phone, "123456", time.Minute, time.Minute)
	verify(t, s, phone, "000000", 1, ErrTooManyAttempts)
	if h, _ := c.HGetAll(bg, CodeKey(phone)).Result(); h["code"] != "" || h["attempts"] != "1" {
		t.Fatalf("after the last attempt %s = %v; want no code, attempts 1", CodeKey(phone), h)
	}
}

func TestRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
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
