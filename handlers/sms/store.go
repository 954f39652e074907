package sms

import (
	"context"
	"crypto/subtle"
	"sync"
	"time"
)

// CodeStore keeps verification codes and resend locks. Both
// implementations in this package, RedisStore and MemoryStore, satisfy
// the same contract, which the Service relies on:
//
// Save stores code as phone's code for ttl and takes phone's resend lock
// for lock, atomically and both or neither: while the lock is held it
// stores nothing and returns a *TooSoonError (ErrTooSoon) with the time
// left. A saved code replaces the previous one and its attempts.
//
// Verify counts one attempt at phone's code and compares guess with it in
// constant time. A match consumes the code atomically (so that of
// concurrent verifications of the right code exactly one succeeds) and
// returns nil. Otherwise it returns ErrNoCode when there is no code (never
// saved, expired or consumed), a *WrongCodeError (ErrWrongCode) with the
// attempts left, or ErrTooManyAttempts once maxAttempts attempts have been
// made; the attempt that uses up the last one invalidates the code. The
// count is taken before the comparison, so concurrent guesses cannot
// exceed maxAttempts.
//
// Release undoes a Save whose code could not be sent: when phone's code is
// still code, it deletes the code and the resend lock, so that the user
// can ask again at once. Otherwise it does nothing.
//
// Implementations are safe for concurrent use; the phone is a valid E.164
// number.
type CodeStore interface {
	Save(ctx context.Context, phone, code string, ttl, lock time.Duration) error
	Verify(ctx context.Context, phone, guess string, maxAttempts int) error
	Release(ctx context.Context, phone, code string) error
}

// equal compares a guess with a code in time that depends on their
// lengths only.
func equal(code, guess string) bool {
	return subtle.ConstantTimeCompare([]byte(code), []byte(guess)) == 1
}

// MemoryStore is a CodeStore in the process's memory, for a single
// process with no Redis: the mem:// broker's companion, tests and
// development. Codes do not survive the process.
type MemoryStore struct {
	now func() time.Time

	mu    sync.Mutex
	codes map[string]*memoryCode
	locks map[string]time.Time // phone -> lock expiry
	saves int
}

type memoryCode struct {
	code     string // "" once invalidated
	attempts int
	expires  time.Time
}

var _ CodeStore = (*MemoryStore)(nil)

// sweepEvery is how many saves pass between sweeps of expired entries, so
// that phones never heard from again do not pile up.
const sweepEvery = 1024

// NewMemoryStore returns an empty in-process store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{now: time.Now, codes: map[string]*memoryCode{}, locks: map[string]time.Time{}}
}

// Save implements CodeStore.
func (m *MemoryStore) Save(_ context.Context, phone, code string, ttl, lock time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if until, ok := m.locks[phone]; ok && now.Before(until) {
		return &TooSoonError{RetryAfter: until.Sub(now)}
	}
	m.locks[phone] = now.Add(lock)
	m.codes[phone] = &memoryCode{code: code, expires: now.Add(ttl)}
	if m.saves++; m.saves%sweepEvery == 0 {
		m.sweep(now)
	}
	return nil
}

// Verify implements CodeStore.
func (m *MemoryStore) Verify(_ context.Context, phone, guess string, maxAttempts int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.codes[phone]
	if c == nil || !m.now().Before(c.expires) {
		delete(m.codes, phone)
		return ErrNoCode
	}
	c.attempts++
	if c.attempts > maxAttempts {
		return ErrTooManyAttempts
	}
	if equal(c.code, guess) {
		delete(m.codes, phone)
		return nil
	}
	left := maxAttempts - c.attempts
	if left == 0 {
		c.code = ""
	}
	return &WrongCodeError{Remaining: left}
}

// Release implements CodeStore.
func (m *MemoryStore) Release(_ context.Context, phone, code string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.codes[phone]; c != nil && c.code == code {
		delete(m.codes, phone)
		delete(m.locks, phone)
	}
	return nil
}

func (m *MemoryStore) sweep(now time.Time) {
	for phone, c := range m.codes {
		if !now.Before(c.expires) {
			delete(m.codes, phone)
		}
	}
	for phone, until := range m.locks {
		if !now.Before(until) {
			delete(m.locks, phone)
		}
	}
}
