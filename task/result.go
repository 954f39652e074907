package task

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Status is a task's state, as Celery names them. Package celery records
// the same states in Celery's result backends.
type Status string

const (
	Pending Status = "PENDING" // unknown to the store: queued, or never sent
	Started Status = "STARTED" // a worker is running it
	Retry   Status = "RETRY"   // failed, and will run again
	Success Status = "SUCCESS" // done; Result holds its value
	Failure Status = "FAILURE" // failed for good; Error says why
	Revoked Status = "REVOKED" // not run: it expired before a worker took it
)

// Done reports whether the status is final.
func (s Status) Done() bool { return s == Success || s == Failure || s == Revoked }

// State is what a result store knows of a task.
type State struct {
	ID      string          `json:"id"`
	Task    string          `json:"task"`
	Status  Status          `json:"status"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
	Attempt int             `json:"attempt"`
	Updated time.Time       `json:"updated"`
}

// Decode unmarshals the task's result into v.
func (s State) Decode(v any) error { return json.Unmarshal(s.Result, v) }

// Store keeps task states. A worker given one records every transition;
// Get of an id it does not know returns a State with status Pending.
type Store interface {
	Set(ctx context.Context, s State, ttl time.Duration) error
	Get(ctx context.Context, id string) (State, error)
}

// Wait polls st until the task's state is final or ctx is done.
func Wait(ctx context.Context, st Store, id string) (State, error) {
	pause := 10 * time.Millisecond
	for {
		s, err := st.Get(ctx, id)
		if err != nil {
			return s, err
		}
		if s.Status.Done() {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, 500*time.Millisecond)
	}
}

// MemoryStore is an in-process Store, for tests and the memory backend.
type MemoryStore struct {
	mu     sync.Mutex
	states map[string]memoryState
}

type memoryState struct {
	s       State
	expires time.Time
}

// NewMemoryStore returns an empty in-process store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{states: map[string]memoryState{}} }

// Set records s until ttl passes (ttl <= 0: forever).
func (m *MemoryStore) Set(_ context.Context, s State, ttl time.Duration) error {
	var exp time.Time
	if ttl > 0 {
		exp = time.Now().Add(ttl)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s.ID] = memoryState{s, exp}
	return nil
}

// Get returns the state of id, or Pending when unknown or expired.
func (m *MemoryStore) Get(_ context.Context, id string) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.states[id]
	if !ok || (!ms.expires.IsZero() && time.Now().After(ms.expires)) {
		delete(m.states, id)
		return State{ID: id, Status: Pending}, nil
	}
	return ms.s, nil
}
