package redisresult_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/celery"
	"github.com/omnibus-mq/omnibus/celery/redisresult"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

func client(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// The stored JSON has the fields Celery's Redis backend writes, a
// message on the key's channel, and a first SUCCESS that stays.
func TestStoreResult(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	id := brokertest.Name(t)
	key := redisresult.KeyPrefix + id
	defer rdb.Del(ctx, key)
	store := redisresult.New(rdb, redisresult.Expires(time.Minute))

	if r, err := store.Get(ctx, id); err != nil || r.Status != celery.StatePending {
		t.Fatalf("before any result: %+v %v", r, err)
	}
	sub := rdb.Subscribe(ctx, key)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	done := time.Date(2026, 11, 25, 19, 31, 23, 879104000, time.UTC)
	if err := store.StoreResult(ctx, celery.Result{TaskID: id, Status: celery.StateSuccess, Value: []any{1, "a"}, DoneAt: done, ParentID: "p"}); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal([]byte(raw), &meta); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"status": "SUCCESS", "result": []any{1.0, "a"}, "traceback": nil, "children": []any{},
		"date_done": "2026-11-25T19:31:23.879104+00:00", "task_id": id, "parent_id": "p",
	}
	if len(meta) != len(want) {
		t.Errorf("stored %v, want %v", meta, want)
	}
	for k, w := range want {
		if got, _ := json.Marshal(meta[k]); string(got) != string(mustJSON(w)) {
			t.Errorf("%s = %s, want %s", k, got, mustJSON(w))
		}
	}
	select {
	case msg := <-sub.Channel():
		if msg.Payload != raw {
			t.Errorf("published %s, stored %s", msg.Payload, raw)
		}
	case <-time.After(2 * time.Second):
		t.Error("nothing published on the result's channel")
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("TTL %v", ttl)
	}

	if err := store.StoreResult(ctx, celery.Result{TaskID: id, Status: celery.StateFailure, Value: "late duplicate"}); err != nil {
		t.Fatal(err)
	}
	r, err := store.Get(ctx, id)
	if err != nil || r.Status != celery.StateSuccess || !r.DoneAt.Equal(done) || r.ParentID != "p" {
		t.Fatalf("after a duplicate failure: %+v %v", r, err)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
