package sms

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore is a CodeStore in Redis: a standalone server, a primary
// with replicas (through Sentinel too), or a Redis Cluster. Any number of
// processes may share it.
//
// A phone's data lives in two keys:
//
//	sms_<phone>      hash: code, attempts (verifications made); PX = code TTL
//	is_send_<phone>  the resend lock; PX = lock duration
//
// On a Redis Cluster (a *redis.ClusterClient) the phone is the keys' hash
// tag, sms_{<phone>} and is_send_{<phone>}, so that both are in one slot
// and one script can touch them; Keys returns the names a store uses.
//
// Save is one round trip: a Lua script (EVALSHA) that runs
// SET is_send_<phone> 1 NX PX <lock> and, only when that took the lock,
// writes the code hash with its TTL, else returns the lock's PTTL. A
// MULTI/EXEC pipeline would also be one round trip and atomic, but cannot
// make the code's write depend on the lock's: both SETs would run, and a
// refused request would overwrite the code already sent. WATCH could, at
// the cost of extra round trips. The first Save on a Redis that has not
// cached the script yet adds one EVAL round trip (go-redis's Script.Run).
//
// Verify takes one round trip to count the attempt and fetch the code
// (a script: HINCRBY attempts, refused past the limit), compares in Go
// with crypto/subtle, and on a match a second to delete the hash if it
// still holds that code (so concurrent verifications consume it once).
// The wrong guess that uses up the attempts deletes the code field; the
// hash stays until its TTL so that later guesses get ErrTooManyAttempts.
type RedisStore struct {
	c      redis.Scripter
	tagged bool // key names carry the phone as hash tag (Redis Cluster)
}

var _ CodeStore = (*RedisStore)(nil)

// NewRedisStore returns a store that keeps codes through c: a
// *redis.Client, a failover client, or a *redis.ClusterClient, for which
// the keys are hash-tagged.
func NewRedisStore(c redis.Scripter) *RedisStore {
	_, cluster := c.(*redis.ClusterClient)
	return &RedisStore{c: c, tagged: cluster}
}

// CodeKey and LockKey are the Redis keys of phone's code and resend lock
// outside a Redis Cluster.
func CodeKey(phone string) string { return "sms_" + phone }

// LockKey is the key of phone's resend lock; see CodeKey.
func LockKey(phone string) string { return "is_send_" + phone }

// Keys returns the keys of phone's code and resend lock in this store.
func (s *RedisStore) Keys(phone string) (code, lock string) {
	if s.tagged {
		return "sms_{" + phone + "}", "is_send_{" + phone + "}"
	}
	return CodeKey(phone), LockKey(phone)
}

// keys is Keys for the store's operations: on a cluster a phone with a
// brace, which would end the hash tag early and split the keys, is
// refused (normalized numbers have none).
func (s *RedisStore) keys(phone string) (code, lock string, err error) {
	if s.tagged && strings.ContainsAny(phone, "{}") {
		return "", "", fmt.Errorf("%w: %q holds a brace, which Redis Cluster keys cannot carry in their hash tag", ErrInvalidPhone, phone)
	}
	code, lock = s.Keys(phone)
	return code, lock, nil
}

var (
	// KEYS: lock, code. ARGV: code, ttl ms, lock ms.
	// Returns {1} when saved, {0, pttl of the lock} when refused.
	saveScript = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'code', ARGV[1], 'attempts', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1}
end
return {0, redis.call('PTTL', KEYS[1])}
`)

	// KEYS: code. ARGV: max attempts.
	// Returns {0} without a code, {-1} past the limit, else
	// {1, attempts, code}.
	takeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n > tonumber(ARGV[1]) then return {-1} end
local code = redis.call('HGET', KEYS[1], 'code')
if not code then return {0} end
return {1, n, code}
`)

	// KEYS: code. ARGV: code. Deletes the hash if it holds that code.
	consumeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'code') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

	// KEYS: code. ARGV: code. Drops the code from the hash, keeping the
	// attempt count until the TTL.
	invalidateScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'code') == ARGV[1] then
  return redis.call('HDEL', KEYS[1], 'code')
end
return 0
`)

	// KEYS: lock, code. ARGV: code. Deletes both if the hash holds that code.
	releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], 'code') == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
`)
)

// Save implements CodeStore in one round trip.
func (s *RedisStore) Save(ctx context.Context, phone, code string, ttl, lock time.Duration) error {
	codeKey, lockKey, err := s.keys(phone)
	if err != nil {
		return err
	}
	res, err := saveScript.Run(ctx, s.c, []string{lockKey, codeKey},
		code, ttl.Milliseconds(), lock.Milliseconds()).Int64Slice()
	if err != nil {
		return fmt.Errorf("sms: save code in redis: %w", err)
	}
	if len(res) > 0 && res[0] == 1 {
		return nil
	}
	wait := lock
	if len(res) > 1 && res[1] >= 0 {
		wait = time.Duration(res[1]) * time.Millisecond
	}
	return &TooSoonError{RetryAfter: wait}
}

// Verify implements CodeStore.
func (s *RedisStore) Verify(ctx context.Context, phone, guess string, maxAttempts int) error {
	codeKey, _, err := s.keys(phone)
	if err != nil {
		return err
	}
	key := []string{codeKey}
	res, err := takeScript.Run(ctx, s.c, key, maxAttempts).Slice()
	if err != nil {
		return fmt.Errorf("sms: read code from redis: %w", err)
	}
	status, _ := res[0].(int64)
	switch {
	case status == 0:
		return ErrNoCode
	case status < 0:
		return ErrTooManyAttempts
	case len(res) != 3:
		return fmt.Errorf("sms: unexpected reply from redis: %d values", len(res))
	}
	attempts, _ := res[1].(int64)
	code, _ := res[2].(string)
	if equal(code, guess) {
		n, err := consumeScript.Run(ctx, s.c, key, code).Int64()
		if err != nil {
			return fmt.Errorf("sms: consume code in redis: %w", err)
		}
		if n == 0 {
			// A concurrent verification consumed it first.
			return ErrNoCode
		}
		return nil
	}
	left := max(maxAttempts-int(attempts), 0)
	if left == 0 {
		// Hygiene only: the attempt count already bars the code, so a
		// failure here changes nothing the caller must know.
		_ = invalidateScript.Run(ctx, s.c, key, code).Err()
	}
	return &WrongCodeError{Remaining: left}
}

// Release implements CodeStore.
func (s *RedisStore) Release(ctx context.Context, phone, code string) error {
	codeKey, lockKey, err := s.keys(phone)
	if err != nil {
		return err
	}
	err = releaseScript.Run(ctx, s.c, []string{lockKey, codeKey}, code).Err()
	if err != nil {
		return fmt.Errorf("sms: release code in redis: %w", err)
	}
	return nil
}
