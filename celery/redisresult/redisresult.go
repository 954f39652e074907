// Package redisresult stores the results of tasks run in Go where
// Celery's Redis result backend keeps them, so that a Python client's
// AsyncResult(id).get() returns them:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	w, err := celery.NewWorker(b, "celery", celery.Results(redisresult.New(rdb)))
//
// Each result is the JSON object {status, result, traceback, children,
// date_done, task_id} under "celery-task-meta-<id>", kept for a day like
// Celery's result_expires, and published on a channel of the same name
// for the clients that wait on it.
package redisresult

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/celery"
	"github.com/omnibus-mq/omnibus/task"
)

// KeyPrefix starts every result key, as in Celery.
const KeyPrefix = "celery-task-meta-"

// DefaultExpires is how long a result is kept: Celery's default
// result_expires.
const DefaultExpires = 24 * time.Hour

// Store is a celery.ResultStore in Redis.
type Store struct {
	rdb     redis.UniversalClient
	expires time.Duration
}

var _ celery.ResultStore = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// Expires sets how long results are kept; zero or less keeps them until
// deleted. Default DefaultExpires.
func Expires(d time.Duration) Option { return func(s *Store) { s.expires = d } }

// New returns a store writing through rdb.
func New(rdb redis.UniversalClient, opts ...Option) *Store {
	s := &Store{rdb: rdb, expires: DefaultExpires}
	for _, o := range opts {
		o(s)
	}
	return s
}

type meta struct {
	Status    task.Status `json:"status"`
	Result    any         `json:"result"`
	Traceback *string     `json:"traceback"`
	Children  []any       `json:"children"`
	DateDone  *string     `json:"date_done"`
	TaskID    string      `json:"task_id"`
	ParentID  string      `json:"parent_id,omitempty"`
	GroupID   string      `json:"group_id,omitempty"`
}

// isoTime is Python's datetime.isoformat() of an aware UTC time.
const isoTime = "2006-01-02T15:04:05.000000-07:00"

// StoreResult records r, unless the task already has a SUCCESS recorded:
// Celery keeps the first success, so that a duplicate run of a task
// cannot overwrite it.
func (s *Store) StoreResult(ctx context.Context, r celery.Result) error {
	key := KeyPrefix + r.TaskID
	if cur, err := s.get(ctx, key); err != nil {
		return err
	} else if cur != nil && cur.Status == celery.StateSuccess {
		return nil
	}
	m := meta{Status: r.Status, Result: r.Value, Children: []any{}, TaskID: r.TaskID, ParentID: r.ParentID, GroupID: r.GroupID}
	if r.Traceback != "" {
		m.Traceback = &r.Traceback
	}
	if !r.DoneAt.IsZero() {
		d := r.DoneAt.UTC().Format(isoTime)
		m.DateDone = &d
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("redisresult: encode the result of %s: %w", r.TaskID, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, b, max(s.expires, 0))
		p.Publish(ctx, key, b)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisresult: store the result of %s: %w", r.TaskID, err)
	}
	return nil
}

// Get returns the result recorded for id, or one with status
// celery.StatePending when there is none (not run yet, unknown, expired).
func (s *Store) Get(ctx context.Context, id string) (celery.Result, error) {
	m, err := s.get(ctx, KeyPrefix+id)
	if err != nil || m == nil {
		return celery.Result{TaskID: id, Status: celery.StatePending}, err
	}
	r := celery.Result{TaskID: id, Status: m.Status, Value: m.Result, ParentID: m.ParentID, GroupID: m.GroupID}
	if m.Traceback != nil {
		r.Traceback = *m.Traceback
	}
	if m.DateDone != nil {
		if t, err := time.Parse(time.RFC3339Nano, *m.DateDone); err == nil {
			r.DoneAt = t
		}
	}
	return r, nil
}

func (s *Store) get(ctx context.Context, key string) (*meta, error) {
	b, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redisresult: get %s: %w", key, err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("redisresult: decode %s: %w", key, err)
	}
	return &m, nil
}
