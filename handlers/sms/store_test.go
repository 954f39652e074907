package sms

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
)

// testPhone returns a fictional number (+1 555 prefix) no other test or
// run uses, so tests can share a Redis.
func testPhone(t testing.TB) string {
	n, err := rand.Int(rand.Reader, big.NewInt(1e7))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("+1555%07d", n)
}

// redisClient connects to the test Redis (OMNIBUS_REDIS_URL, which may
// name a Redis Cluster or a Sentinel set).
func redisClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	c, err := redisconn.Open(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cleanup deletes the keys of phone when the test ends.
func cleanup(t testing.TB, c redis.UniversalClient, phone string) {
	code, lock := NewRedisStore(c).Keys(phone)
	// One slot on a cluster too: the keys share their hash tag.
	t.Cleanup(func() { c.Del(context.Background(), code, lock) })
}

// stores returns a constructor per CodeStore; each test gets a fresh
// phone, so the Redis store's tests do not see each other's keys.
func stores() map[string]func(t *testing.T) (CodeStore, string) {
	return map[string]func(t *testing.T) (CodeStore, string){
		"memory": func(t *testing.T) (CodeStore, string) { return NewMemoryStore(), testPhone(t) },
		"redis": func(t *testing.T) (CodeStore, string) {
			c := redisClient(t)
			phone := testPhone(t)
			cleanup(t, c, phone)
			return NewRedisStore(c), phone
		},
	}
}

func TestCodeStores(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for sub, test := range map[string]func(*testing.T, CodeStore, string){
				"SaveVerifyConsumes":    testSaveVerify,
				"ResendLock":            testResendLock,
				"LockExpires":           testLockExpires,
				"CodeExpires":           testCodeExpires,
				"Attempts":              testAttempts,
				"ConcurrentGuesses":     testConcurrentGuesses,
				"ConcurrentVerify":      testConcurrentVerify,
				"ConcurrentSave":        testConcurrentSave,
				"Release":               testRelease,
				"NewCodeResetsAttempts": testNewCodeResetsAttempts,
			} {
				t.Run(sub, func(t *testing.T) {
					store, phone := open(t)
					test(t, store, phone)
				})
			}
		})
	}
}

var bg = context.Background()

func save(t *testing.T, s CodeStore, phone, code string, ttl, lock time.Duration) {
	t.Helper()
	if err := s.Save(bg, phone, code, ttl, lock); err != nil {
		t.Fatalf("Save(%s): %v", code, err)
	}
}

func verify(t *testing.T, s CodeStore, phone, guess string, max int, want error) {
	t.Helper()
	err := s.Verify(bg, phone, guess, max)
	if (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
		t.Fatalf("Verify(%s) = %v, want %v", guess, err, want)
	}
}

func testSaveVerify(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "012345", time.Minute, time.Minute)
	verify(t, s, phone, "012345", 5, nil)
	verify(t, s, phone, "012345", 5, ErrNoCode)
	verify(t, s, testPhone(t), "012345", 5, ErrNoCode)
}

func testResendLock(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "111111", time.Minute, time.Minute)
	err := s.Save(bg, phone, "222222", time.Minute, time.Minute)
	var soon *TooSoonError
	if !errors.Is(err, ErrTooSoon) || !errors.As(err, &soon) || soon.RetryAfter <= 0 || soon.RetryAfter > time.Minute {
		t.Fatalf("second Save = %v, want a *TooSoonError with 0 < RetryAfter <= 1m", err)
	}
	// The refused request left the first code in place.
	verify(t, s, phone, "222222", 5, ErrWrongCode)
	verify(t, s, phone, "111111", 5, nil)
}

func testLockExpires(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "111111", time.Minute, 50*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	save(t, s, phone, "222222", time.Minute, time.Minute)
	verify(t, s, phone, "111111", 5, ErrWrongCode)
	verify(t, s, phone, "222222", 5, nil)
}

func testCodeExpires(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "111111", 50*time.Millisecond, time.Minute)
	time.Sleep(100 * time.Millisecond)
	verify(t, s, phone, "111111", 5, ErrNoCode)
}

func testAttempts(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "123456", time.Minute, time.Minute)
	for left := 2; left >= 0; left-- {
		err := s.Verify(bg, phone, "654321", 3)
		var wrong *WrongCodeError
		if !errors.As(err, &wrong) || wrong.Remaining != left {
			t.Fatalf("wrong guess = %v, want a *WrongCodeError with %d left", err, left)
		}
		if got := errors.Is(err, ErrTooManyAttempts); got != (left == 0) {
			t.Fatalf("errors.Is(%v, ErrTooManyAttempts) = %v with %d left", err, got, left)
		}
	}
	// Invalidated: the right code no longer works either.
	verify(t, s, phone, "123456", 3, ErrTooManyAttempts)
	verify(t, s, phone, "123456", 3, ErrTooManyAttempts)
}

// run calls f from n goroutines at once and returns the results.
func run(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = f(i)
		}()
	}
	start.Done()
	done.Wait()
	return errs
}

func count(errs []error, target error) int {
	n := 0
	for _, err := range errs {
		if (target == nil && err == nil) || (target != nil && errors.Is(err, target)) {
			n++
		}
	}
	return n
}

func testConcurrentGuesses(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "123456", time.Minute, time.Minute)
	errs := run(40, func(i int) error { return s.Verify(bg, phone, fmt.Sprintf("%06d", 900000+i), 5) })
	// Exactly five guesses were compared; the rest were refused unseen.
	var wrong *WrongCodeError
	compared := 0
	for _, err := range errs {
		if errors.As(err, &wrong) {
			compared++
		} else if !errors.Is(err, ErrTooManyAttempts) {
			t.Fatalf("guess: %v", err)
		}
	}
	if compared != 5 {
		t.Fatalf("%d of 40 concurrent guesses were compared, want 5", compared)
	}
	verify(t, s, phone, "123456", 5, ErrTooManyAttempts)
}

func testConcurrentVerify(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "123456", time.Minute, time.Minute)
	errs := run(20, func(int) error { return s.Verify(bg, phone, "123456", 100) })
	if ok, none := count(errs, nil), count(errs, ErrNoCode); ok != 1 || none != 19 {
		t.Fatalf("20 concurrent verifications of the right code: %d succeeded, %d found no code; want 1 and 19 (%v)", ok, none, errs)
	}
}

func testConcurrentSave(t *testing.T, s CodeStore, phone string) {
	errs := run(20, func(i int) error { return s.Save(bg, phone, fmt.Sprintf("%06d", i), time.Minute, time.Minute) })
	if ok, soon := count(errs, nil), count(errs, ErrTooSoon); ok != 1 || soon != 19 {
		t.Fatalf("20 concurrent saves: %d succeeded, %d too soon; want 1 and 19", ok, soon)
	}
	for i, err := range errs {
		if err == nil {
			verify(t, s, phone, fmt.Sprintf("%06d", i), 5, nil)
		}
	}
}

func testRelease(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "111111", time.Minute, time.Minute)
	// Another code's release leaves this one and the lock alone.
	if err := s.Release(bg, phone, "999999"); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(bg, phone, "222222", time.Minute, time.Minute); !errors.Is(err, ErrTooSoon) {
		t.Fatalf("Save after another code's release = %v, want ErrTooSoon", err)
	}
	if err := s.Release(bg, phone, "111111"); err != nil {
		t.Fatal(err)
	}
	verify(t, s, phone, "111111", 5, ErrNoCode)
	save(t, s, phone, "333333", time.Minute, time.Minute)
	verify(t, s, phone, "333333", 5, nil)
}

func testNewCodeResetsAttempts(t *testing.T, s CodeStore, phone string) {
	save(t, s, phone, "111111", time.Minute, time.Millisecond)
	verify(t, s, phone, "000000", 2, ErrWrongCode)
	verify(t, s, phone, "000000", 2, ErrTooManyAttempts)
	time.Sleep(10 * time.Millisecond)
	save(t, s, phone, "222222", time.Minute, time.Minute)
	err := s.Verify(bg, phone, "000000", 2)
	var wrong *WrongCodeError
	if !errors.As(err, &wrong) || wrong.Remaining != 1 {
		t.Fatalf("first guess at a new code = %v, want 1 attempt left", err)
	}
	verify(t, s, phone, "222222", 2, nil)
}

func TestMemoryStoreSweeps(t *testing.T) {
	m := NewMemoryStore()
	now := time.Now()
	m.now = func() time.Time { return now }
	for i := range sweepEvery - 1 {
		save(t, m, fmt.Sprintf("+1555%07d", i), "123456", time.Second, time.Second)
	}
	now = now.Add(2 * time.Second)
	save(t, m, "+15559999999", "123456", time.Second, time.Second)
	if len(m.codes) != 1 || len(m.locks) != 1 {
		t.Fatalf("after a sweep %d codes and %d locks are left, want 1 each", len(m.codes), len(m.locks))
	}
}
