package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/handlers/sms"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/task"
)

var quiet = slog.New(slog.DiscardHandler)

// recorder is the SMS provider of the tests: it records each send with
// the id of the task that made it.
type recorder struct {
	mu    sync.Mutex
	sends []send
	sent  chan send
}

type send struct{ phone, text, taskID string }

func newRecorder() *recorder { return &recorder{sent: make(chan send, 16)} }

func (r *recorder) Send(ctx context.Context, phone, text string) error {
	info, _ := task.InfoFrom(ctx)
	s := send{phone, text, info.ID}
	r.mu.Lock()
	r.sends = append(r.sends, s)
	r.mu.Unlock()
	r.sent <- s
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sends)
}

// start builds the app for o, serves its API with httptest and runs its
// worker; stop stops the worker and reports its error.
func start(t *testing.T, o options, p sms.Provider) (a *app, url string, stop func()) {
	t.Helper()
	if o.queue == "" {
		o.queue = brokertest.Name(t)
	}
	a, err := newApp(context.Background(), o, p, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	srv := httptest.NewServer(a.api)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.worker.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return a, srv.URL, stop
}

// post sends body as JSON and returns the status, the decoded answer and
// the Retry-After header.
func post(t *testing.T, url string, body any) (int, map[string]any, string) {
	t.Helper()
	b, ok := body.([]byte)
	if !ok {
		b, _ = json.Marshal(body)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("POST %s: %s answered %q, not JSON", url, resp.Status, raw)
	}
	return resp.StatusCode, got, resp.Header.Get("Retry-After")
}

func phone(t *testing.T) string {
	p, err := fictionalPhone()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var codeRE = regexp.MustCompile(`\b\d{6}\b`)

// TestEndToEnd runs the service on each backend: an HTTP request stores
// the code (in Redis for the real brokers), the send task travels through
// the broker, the provider is called once with the code, and the code
// verifies once.
//
// OMNIBUS_SMS_REDIS_URL, when set, is the code store of the redisstream
// case instead of OMNIBUS_REDIS_URL, its broker. Either may name a Redis
// Cluster or a Sentinel set.
func TestEndToEnd(t *testing.T) {
	backends := map[string]func(t *testing.T) options{
		"memory": func(t *testing.T) options {
			return options{broker: "mem://e2e-" + bus.NewID()}
		},
		"rabbitmq": func(t *testing.T) options {
			return options{broker: brokertest.AMQP(t), redis: brokertest.Redis(t)}
		},
		"redisstream": func(t *testing.T) options {
			r := brokertest.Redis(t)
			if store := os.Getenv(codeStoreEnv); store != "" {
				return options{broker: r, redis: store}
			}
			return options{broker: r, redis: r}
		},
		"kafka": func(t *testing.T) options {
			return options{broker: "kafka://" + strings.Join(brokertest.Kafka(t), ","), redis: brokertest.Redis(t)}
		},
		"rocketmq": func(t *testing.T) options {
			return options{broker: brokertest.RocketMQ(t), redis: brokertest.Redis(t)}
		},
	}
	for name, opts := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := opts(t)
			o.queue = brokertest.Name(t)
			o.concurrency = 2
			if strings.HasPrefix(o.broker, "redis://") {
				t.Cleanup(func() { deleteStreams(t, o.broker, o.queue) })
			}
			testEndToEnd(t, o)
		})
	}
}

const codeStoreEnv = "OMNIBUS_SMS_REDIS_URL"

func testEndToEnd(t *testing.T, o options) {
	rec := newRecorder()
	a, url, stop := start(t, o, rec)
	ph := phone(t)
	var codeKey string
	if a.store != nil {
		var lockKey string
		codeKey, lockKey = a.store.Keys(ph)
		t.Cleanup(func() { a.rdb.Del(context.Background(), codeKey, lockKey) })
	}

	status, got, _ := post(t, url+"/codes", map[string]string{"phone": ph})
	id, _ := got["task_id"].(string)
	if status != http.StatusAccepted || id == "" {
		t.Fatalf("POST /codes: %d %v, want 202 with a task id", status, got)
	}
	status, got, retry := post(t, url+"/codes", map[string]string{"phone": ph})
	if secs, _ := strconv.Atoi(retry); status != http.StatusTooManyRequests || secs < 1 || secs > 60 {
		t.Fatalf("second POST /codes: %d %v Retry-After %q, want 429 with Retry-After in [1, 60]", status, got, retry)
	}

	var s send
	select {
	case s = <-rec.sent:
	case <-time.After(90 * time.Second):
		t.Fatal("no SMS sent within 90s")
	}
	code := codeRE.FindString(s.text)
	if s.phone != ph || s.taskID != id || code == "" {
		t.Fatalf("sent %+v, want an SMS with a code to %s by task %s", s, ph, id)
	}
	if a.store != nil {
		if stored, err := a.rdb.HGet(context.Background(), codeKey, "code").Result(); err != nil || stored != code {
			t.Fatalf("HGET %s code = %q, %v; want the sent code %s", codeKey, stored, err, code)
		}
	}

	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	if status, got, _ := post(t, url+"/codes/verify", map[string]string{"phone": ph, "code": wrong}); status != http.StatusUnauthorized || got["attempts_left"] != 4.0 {
		t.Fatalf("verify a wrong code: %d %v, want 401 with 4 attempts left", status, got)
	}
	if status, got, _ := post(t, url+"/codes/verify", map[string]string{"phone": ph, "code": code}); status != http.StatusOK || got["verified"] != true {
		t.Fatalf("verify the code: %d %v, want 200", status, got)
	}
	if status, got, _ := post(t, url+"/codes/verify", map[string]string{"phone": ph, "code": code}); status != http.StatusUnauthorized {
		t.Fatalf("verify the code again: %d %v, want 401", status, got)
	}
	if a.store != nil {
		if n, _ := a.rdb.Exists(context.Background(), codeKey).Result(); n != 0 {
			t.Fatalf("%s is still in Redis after the code was used", codeKey)
		}
	}
	// Stopping waits for sends in flight, so a duplicate would be counted.
	stop()
	if n := rec.count(); n != 1 {
		t.Fatalf("the provider was called %d times, want once", n)
	}
}

// deleteStreams removes what the Redis Streams backend made for queue.
func deleteStreams(t *testing.T, url, queue string) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, "*"+queue+"*").Result()
	if err == nil && len(keys) > 0 {
		c.Del(ctx, keys...)
	}
}

func TestAPIErrors(t *testing.T) {
	_, url, _ := start(t, options{broker: "mem://api-" + bus.NewID()}, newRecorder())
	ph := phone(t)
	for _, c := range []struct {
		path string
		body any
		want int
	}{
		{"/codes", []byte(`{"phone":`), http.StatusBadRequest},
		{"/codes", []byte(`[1]`), http.StatusBadRequest},
		{"/codes", []byte(`{"phone":"` + strings.Repeat("1", 8<<10) + `"}`), http.StatusBadRequest},
		{"/codes", map[string]string{"phone": "555 0100"}, http.StatusBadRequest},
		{"/codes/verify", map[string]string{"phone": "555 0100", "code": "123456"}, http.StatusBadRequest},
		{"/codes/verify", map[string]string{"phone": ph}, http.StatusBadRequest},
		{"/codes/verify", map[string]string{"phone": ph, "code": "123456"}, http.StatusUnauthorized},
	} {
		if status, got, _ := post(t, url+c.path, c.body); status != c.want || got["error"] == "" {
			t.Errorf("POST %s %v: %d %v, want %d with an error", c.path, c.body, status, got, c.want)
		}
	}
	resp, err := http.Get(url + "/codes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /codes: %s, want 405", resp.Status)
	}
}

func TestAttemptsRunOut(t *testing.T) {
	rec := newRecorder()
	_, url, _ := start(t, options{broker: "mem://attempts-" + bus.NewID()}, rec)
	ph := phone(t)
	if status, got, _ := post(t, url+"/codes", map[string]string{"phone": ph}); status != http.StatusAccepted {
		t.Fatalf("POST /codes: %d %v", status, got)
	}
	code := codeRE.FindString((<-rec.sent).text)
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	for left := 4; left > 0; left-- {
		if status, got, _ := post(t, url+"/codes/verify", map[string]string{"phone": ph, "code": wrong}); status != http.StatusUnauthorized || got["attempts_left"] != float64(left) {
			t.Fatalf("wrong code: %d %v, want 401 with %d left", status, got, left)
		}
	}
	// The fifth wrong guess uses up the code; the right one comes too late.
	for _, guess := range []string{wrong, code} {
		if status, got, _ := post(t, url+"/codes/verify", map[string]string{"phone": ph, "code": guess}); status != http.StatusTooManyRequests {
			t.Fatalf("guess %s after the attempts ran out: %d %v, want 429", guess, status, got)
		}
	}
}

func TestBrokerDown(t *testing.T) {
	b, err := bus.Open(context.Background(), "mem://down-"+bus.NewID())
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	svc, err := sms.New(sms.Config{Store: sms.NewMemoryStore(), Publisher: b})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newAPI(svc, quiet))
	defer srv.Close()
	ph := phone(t)
	if status, got, _ := post(t, srv.URL+"/codes", map[string]string{"phone": ph}); status != http.StatusServiceUnavailable {
		t.Fatalf("POST /codes with the broker closed: %d %v, want 503", status, got)
	}
	// The failed request left no lock behind: the next one is not told to wait.
	if status, got, _ := post(t, srv.URL+"/codes", map[string]string{"phone": ph}); status != http.StatusServiceUnavailable {
		t.Fatalf("second POST /codes: %d %v, want 503 again, not 429", status, got)
	}
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	o := options{broker: "mem://demo-" + bus.NewID(), addr: "127.0.0.1:0", provider: "console", queue: "sms", concurrency: 1, demo: true}
	if err := run(context.Background(), o, &out, quiet); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"SMS to +1555", "-> 202 Accepted", "-> 429 Too Many Requests", "-> 200 OK", "demo: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		res <- run(ctx, options{broker: "mem://stop-" + bus.NewID(), addr: "127.0.0.1:0", provider: "console", queue: "sms"}, io.Discard, quiet)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("run after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

func TestBadFlags(t *testing.T) {
	for _, o := range []options{
		{broker: "mem://", provider: "pigeon"},
		{broker: "mem://", provider: "http"},
		{broker: "mem://", provider: "http", gateway: "ftp://x"},
		{broker: "nope://", provider: "console", queue: "sms"},
		{broker: "mem://", provider: "console", queue: "sms", redis: "http://x"},
	} {
		if err := run(context.Background(), o, io.Discard, quiet); err == nil {
			t.Errorf("run(%+v) succeeded", o)
		}
	}
}
