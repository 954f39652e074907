package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/task"
	"github.com/omnibus-mq/omnibus/task/redisstore"
)

// A state another client wrote under a task's key, which does not decode,
// is an ErrBadState from Get, and task.Wait returns it instead of polling
// for ever.
func TestUndecodableState(t *testing.T) {
	rdb := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const prefix = "omnibus-test-meta-"
	store := redisstore.New(rdb, prefix)
	for _, raw := range []string{"not json", `{"id":"x","status":"DONE-ISH"}`, `{"id":"x"}`} {
		id := brokertest.Name(t)
		if err := rdb.Set(ctx, prefix+id, raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Get(ctx, id); !errors.Is(err, redisstore.ErrBadState) {
			t.Errorf("Get of %q: %v, want ErrBadState", raw, err)
		}
		if _, err := task.Wait(ctx, store, id); !errors.Is(err, redisstore.ErrBadState) {
			t.Errorf("Wait on %q: %v, want ErrBadState", raw, err)
		}
		rdb.Del(ctx, prefix+id)
	}
}
