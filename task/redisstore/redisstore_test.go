package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/task"
	"github.com/omnibus-mq/omnibus/task/redisstore"
)

func client(t *testing.T) *redis.Client {
	opts, err := redis.ParseURL(brokertest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestStateRoundTripAndExpiry(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	store := redisstore.New(rdb, "omnibus-test-meta-")
	id := brokertest.Name(t)
	if st, err := store.Get(ctx, id); err != nil || st.Status != task.Pending {
		t.Fatalf("unknown id: %+v, %v; want PENDING", st, err)
	}
	want := task.State{ID: id, Task: "t", Status: task.Success, Result: []byte(`{"n":4}`), Attempt: 2, Updated: time.Now().UTC()}
	if err := store.Set(ctx, want, time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, id)
	if err != nil || got.Status != task.Success || string(got.Result) != `{"n":4}` || got.Attempt != 2 {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, want)
	}
	if ttl := rdb.TTL(ctx, "omnibus-test-meta-"+id).Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("key TTL = %v, want the 1s given", ttl)
	}
	rdb.Set(ctx, "omnibus-test-meta-"+id, "not json", time.Second)
	if _, err := store.Get(ctx, id); err == nil {
		t.Fatal("Get of a corrupt state succeeded")
	}
}

func TestWorkerRecordsInRedis(t *testing.T) {
	rdb := client(t)
	b := memory.New(memory.Options{})
	t.Cleanup(func() { b.Close() })
	store := redisstore.New(rdb, "")
	q := brokertest.Name(t)
	add := task.Define[[2]int]("math.add", task.OnQueue(q))
	fail := task.Define[int]("math.fail", task.OnQueue(q), task.MaxRetries(0))
	w, err := task.NewWorker(b, task.WorkerConfig{Results: store})
	if err != nil {
		t.Fatal(err)
	}
	task.HandleResult(w, add, func(_ context.Context, xy [2]int) (int, error) { return xy[0] + xy[1], nil })
	task.Handle(w, fail, func(context.Context, int) error { return errors.New("boom") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	id, err := add.Delay(ctx, b, [2]int{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	st, err := task.Wait(wctx, store, id)
	var sum int
	if err != nil || st.Status != task.Success || st.Decode(&sum) != nil || sum != 5 {
		t.Fatalf("state %+v, %v; want SUCCESS with 5", st, err)
	}
	id, _ = fail.Delay(ctx, b, 1)
	st, err = task.Wait(wctx, store, id)
	if err != nil || st.Status != task.Failure || st.Error != "boom" {
		t.Fatalf("state %+v, %v; want FAILURE boom", st, err)
	}
	if ttl := rdb.TTL(ctx, redisstore.DefaultPrefix+id).Val(); ttl <= 23*time.Hour {
		t.Fatalf("state TTL = %v, want the worker's 24h default", ttl)
	}
}
