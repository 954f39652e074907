// Package redisstore keeps task states in Redis, so that any process can
// read a task's state and result by id:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store := redisstore.New(rdb, "")
//	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
//	...
//	st, err := task.Wait(ctx, store, id)
//
// Each state is one JSON string under "<prefix><id>" with the worker's
// result TTL, so old states expire by themselves.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/task"
)

// DefaultPrefix starts every key when New is given an empty prefix.
const DefaultPrefix = "omnibus-task-meta-"

// Store is a task.Store in Redis.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ task.Store = (*Store)(nil)

// New returns a store using rdb, with keys starting with prefix (default
// DefaultPrefix).
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix}
}

// Set records s for ttl (ttl <= 0: no expiry).
func (s *Store) Set(ctx context.Context, st task.State, ttl time.Duration) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("redisstore: encode state of %s: %w", st.ID, err)
	}
	if ttl < 0 {
		ttl = 0
	}
	if err := s.rdb.Set(ctx, s.prefix+st.ID, b, ttl).Err(); err != nil {
		return fmt.Errorf("redisstore: set state of %s: %w", st.ID, err)
	}
	return nil
}

// Get returns the state of id, or one with status task.Pending when Redis
// has none (not run yet, unknown, or expired).
func (s *Store) Get(ctx context.Context, id string) (task.State, error) {
	b, err := s.rdb.Get(ctx, s.prefix+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return task.State{ID: id, Status: task.Pending}, nil
	}
	if err != nil {
		return task.State{ID: id}, fmt.Errorf("redisstore: get state of %s: %w", id, err)
	}
	return decode(id, b)
}

// ErrBadState reports a stored state that does not decode: not JSON, or
// with a status that is none of task's. Only another writer of the key
// leaves one.
var ErrBadState = errors.New("redisstore: stored state does not decode")

func decode(id string, b []byte) (task.State, error) {
	var st task.State
	if err := json.Unmarshal(b, &st); err != nil {
		return task.State{ID: id}, fmt.Errorf("%w: state of %s: %v", ErrBadState, id, err)
	}
	switch st.Status {
	case task.Pending, task.Started, task.Retry, task.Success, task.Failure:
	default:
		// task.Wait would poll a status that never becomes final.
		return task.State{ID: id}, fmt.Errorf("%w: state of %s has status %q", ErrBadState, id, st.Status)
	}
	return st, nil
}
