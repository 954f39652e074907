package celery_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	_ "github.com/omnibus-mq/omnibus/adapters/kombu"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/celery"
	"github.com/omnibus-mq/omnibus/celery/redisresult"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
	"github.com/omnibus-mq/omnibus/task"
)

// The interop tests run the real Celery from the virtual environment that
// `make venv` creates (scripts/python-requirements.txt pins the version).

const smsTask = "tasks.send_sms_code"

// python returns the venv's interpreter, which has celery installed.
func python(t *testing.T) string {
	t.Helper()
	p := os.Getenv("OMNIBUS_PYTHON")
	if p == "" {
		if root, err := brokertest.RepoRoot(); err == nil {
			p = filepath.Join(root, ".venv", "bin", "python")
		}
	}
	out, err := exec.Command(p, "-c", "import celery; print(celery.__version__)").CombinedOutput()
	if err != nil {
		if brokertest.InCI() {
			t.Fatalf("python with celery (%s): %v %s; run: make venv", p, err, out)
		}
		t.Skipf("python with celery not found at %s (%v); run: make venv", p, err)
	}
	t.Logf("Celery %s", strings.TrimSpace(string(out)))
	return p
}

// queueFor returns a fresh queue name and removes what Celery and omnibus
// declare for it when the test ends.
func queueFor(t *testing.T, url string) string {
	t.Helper()
	q := brokertest.Name(t)
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		// The RabbitMQ adapter's retry queues for the delays used here.
		names := []string{q, q + ".dlq"}
		for _, ms := range []string{"50", "100", "250", "500", "1000", "2000", "5000"} {
			names = append(names, q+".retry."+ms+"ms")
		}
		for _, name := range names {
			ch.QueueDelete(name, false, false, false)
		}
		ch.ExchangeDelete(q, false, false)
	})
	return q
}

// transport is one broker as both sides see it: Celery's broker_url and
// transport options, and the omnibus URL of the same queues.
type transport struct {
	name      string
	celeryURL string
	// options is Celery's broker_transport_options, as JSON.
	options string
	busURL  string
	queue   string
	// keyPrefix starts every Redis key of the queue (kombu's
	// global_keyprefix); empty on RabbitMQ.
	keyPrefix string
	// redisURL is the Redis of a Redis transport, as OMNIBUS_REDIS_URL
	// gives it (redis:// or redis+sentinel://).
	redisURL string
}

// redisClient returns a client of the Redis at raw, a redis:// URL or a
// redis+sentinel://sentinel,.../master one.
func redisClient(t testing.TB, raw string) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	return rdb
}

// celerySentinel returns Celery's broker URL and master_name of a
// redis+sentinel://s1,s2/master URL: sentinel://s1;sentinel://s2.
func celerySentinel(u *url.URL) (string, string) {
	var parts []string
	for h := range strings.SplitSeq(u.Host, ",") {
		c := url.URL{Scheme: "sentinel", User: u.User, Host: h}
		parts = append(parts, c.String())
	}
	return strings.Join(parts, ";"), strings.Trim(u.Path, "/")
}

// onBrokers runs fn as a subtest on RabbitMQ and on Redis.
func onBrokers(t *testing.T, fn func(t *testing.T, tr transport)) {
	t.Run("rabbitmq", func(t *testing.T) { fn(t, rabbitTransport(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, redisTransport(t, nil)) })
}

func rabbitTransport(t *testing.T) transport {
	url := brokertest.AMQP(t)
	return transport{name: "rabbitmq", celeryURL: url, busURL: url + "?topology=queue", queue: queueFor(t, url)}
}

// redisTransport returns kombu's Redis transport with a key prefix of the
// test's own, so that the unacked hash is the test's alone; opts are
// more transport options for both sides (kombu's names).
//
// Behind Sentinel (OMNIBUS_REDIS_URL=redis+sentinel://...) Celery gets
// its sentinel:// URL with master_name, omnibus kombu+sentinel://.
func redisTransport(t *testing.T, opts map[string]any) transport {
	raw := brokertest.Redis(t)
	prefix := brokertest.Name(t) + ":"
	t.Cleanup(func() { deletePrefix(t, raw, prefix) })
	all := map[string]any{"global_keyprefix": prefix}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	celeryURL := raw
	if u.Scheme == "redis+sentinel" {
		var master string
		celeryURL, master = celerySentinel(u)
		all["master_name"] = master
	}
	q := url.Values{"global_keyprefix": {prefix}, "poll_interval": {"200ms"}}
	for k, v := range opts {
		all[k] = v
		if k != "unacked_restore_throttle" { // Celery's alone
			q.Set(k, fmt.Sprint(v))
		}
	}
	u.Scheme = "kombu+" + strings.TrimPrefix(u.Scheme, "redis+")
	u.RawQuery = q.Encode()
	return transport{name: "redis", celeryURL: celeryURL, options: string(mustJSON(t, all)), busURL: u.String(),
		queue: brokertest.Name(t), keyPrefix: prefix, redisURL: raw}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deletePrefix deletes the Redis keys under prefix.
func deletePrefix(t testing.TB, raw, prefix string) {
	rdb := redisClient(t, raw)
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

// env is the environment of a Celery process on tr.
func (tr transport) env(extra ...string) []string {
	e := append(os.Environ(), "CELERY_BROKER_URL="+tr.celeryURL)
	if tr.options != "" {
		e = append(e, "CELERY_BROKER_TRANSPORT_OPTIONS="+tr.options)
	}
	return append(e, extra...)
}

func openBus(t *testing.T, ctx context.Context, tr transport) bus.Broker {
	t.Helper()
	b, err := bus.Open(ctx, tr.busURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// logBuffer collects a subprocess's output for the failure message and
// reports when a line containing a marker appears.
type logBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	once   sync.Once
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if strings.Contains(l.buf.String(), l.marker) {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startCeleryWorker runs a Celery worker (solo pool) on queue and returns
// once it is consuming. The worker is stopped when the test ends.
func startCeleryWorker(t *testing.T, py string, tr transport, out string) *logBuffer {
	t.Helper()
	cmd := exec.Command(py, "-m", "celery", "-A", "sms_tasks", "worker", "-P", "solo", "-Q", tr.queue,
		"--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info", "-n", "go-interop@%h")
	cmd.Dir = "testdata"
	cmd.Env = tr.env("SMS_OUT=" + out)
	logs := &logBuffer{marker: " ready.", seen: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = logs, logs
	// Its own process group, so that Kill reaches any process the worker
	// started; and a bound on waiting for output pipes that such a process
	// might keep open, so that a cleanup can never hang.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Every task has been acknowledged by now, and an idle Celery 5.7
		// worker can take ten seconds to finish even a cold shutdown.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("celery worker log:\n%s", logs)
		}
	})
	select {
	case <-logs.seen:
	case <-exited:
		t.Fatalf("celery worker exited: %v\n%s", exitErr, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("celery worker not ready after 20s:\n%s", logs)
	}
	return logs
}

type smsRecord struct {
	ID       string  `json:"id"`
	Task     string  `json:"task"`
	Phone    string  `json:"phone"`
	Code     string  `json:"code"`
	Lang     string  `json:"lang"`
	Retries  any     `json:"retries"`
	ETA      *string `json:"eta"`
	RootID   string  `json:"root_id"`
	ParentID *string `json:"parent_id"`
	RanAt    float64 `json:"ran_at"`
	PID      int     `json:"pid"`
}

// waitRecords waits until the Celery task has written n lines to path.
func waitRecords(t *testing.T, ctx context.Context, path string, n int, logs *logBuffer) []smsRecord {
	t.Helper()
	for {
		data, _ := os.ReadFile(path)
		var recs []smsRecord
		for line := range bytes.Lines(data) {
			var r smsRecord
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("task record %q: %v", line, err)
			}
			recs = append(recs, r)
		}
		if len(recs) >= n {
			return recs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the Celery worker ran %d of %d tasks:\n%s", len(recs), n, logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestCeleryWorkerRunsGoTasks: omnibus enqueues, a real Celery worker runs
// the task, with positional and keyword arguments and with an eta.
func TestCeleryWorkerRunsGoTasks(t *testing.T) { onBrokers(t, testCeleryWorkerRunsGoTasks) }

func testCeleryWorkerRunsGoTasks(t *testing.T, tr transport) {
	py := python(t)
	queue := tr.queue
	out := filepath.Join(t.TempDir(), "sms.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	logs := startCeleryWorker(t, py, tr, out)
	b := openBus(t, ctx, tr)

	first, err := celery.Delay(ctx, b, queue, smsTask, "+15550100", "4711")
	if err != nil {
		t.Fatal(err)
	}
	r, err := celery.NewRequest(smsTask, []any{"+15550101", "0042"}, map[string]any{"lang": "fr"})
	if err != nil {
		t.Fatal(err)
	}
	eta := time.Now().Add(1500 * time.Millisecond)
	r.ETA = eta
	second, err := celery.Apply(ctx, b, queue, r)
	if err != nil {
		t.Fatal(err)
	}

	recs := waitRecords(t, ctx, out, 2, logs)
	byID := map[string]smsRecord{}
	for _, rec := range recs {
		byID[rec.ID] = rec
	}
	a, ok := byID[first]
	if !ok || a.Phone != "+15550100" || a.Code != "4711" || a.Lang != "en" || a.Task != smsTask ||
		a.Retries != float64(0) || a.ETA != nil || a.RootID != first || a.ParentID != nil {
		t.Errorf("delay %s ran as %+v", first, a)
	}
	c, ok := byID[second]
	if !ok || c.Phone != "+15550101" || c.Code != "0042" || c.Lang != "fr" || c.ETA == nil {
		t.Fatalf("apply %s ran as %+v", second, c)
	}
	if ran := time.UnixMicro(int64(c.RanAt * 1e6)); ran.Before(eta.Add(-50 * time.Millisecond)) {
		t.Errorf("the eta task ran at %v, before its eta %v", ran, eta)
	}
	if strings.Contains(logs.String(), "ERROR") {
		t.Errorf("the Celery worker logged an error:\n%s", logs)
	}
}

// TestCeleryClientToGoWorker: a real Celery client sends with delay-like
// apply_async and with a countdown; an omnibus worker runs both, retrying
// a failure the way Celery does.
func TestCeleryClientToGoWorker(t *testing.T) { onBrokers(t, testCeleryClientToGoWorker) }

func testCeleryClientToGoWorker(t *testing.T, tr transport) {
	py := python(t)
	queue := tr.queue
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	send := exec.CommandContext(ctx, py, "sms_tasks.py", "send", queue, "+15550199", "9876")
	send.Dir = "testdata"
	send.Env = tr.env("SMS_OUT=" + os.DevNull)
	sent := time.Now()
	outb, err := send.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("celery client: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("celery client: %v", err)
	}
	var ids struct{ Now, Later string }
	if err := json.Unmarshal(bytes.TrimSpace(outb), &ids); err != nil {
		t.Fatalf("celery client output %q: %v", outb, err)
	}

	b := openBus(t, ctx, tr)
	w, err := celery.NewWorker(b, queue, celery.Concurrency(2), celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		req celery.Request
		at  time.Time
	}
	runs := make(chan run, 10)
	var failedOnce sync.Once
	w.Handle(smsTask, func(ctx context.Context, r celery.Request) error {
		runs <- run{r, time.Now()}
		fail := false
		if r.ID == ids.Now {
			failedOnce.Do(func() { fail = true })
		}
		if fail {
			return bus.RetryAfter(errors.New("sms gateway busy"), 200*time.Millisecond)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		w.Shutdown(sctx)
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	var nowRuns []celery.Request
	var later *run
	for len(nowRuns) < 2 || later == nil {
		select {
		case r := <-runs:
			switch r.req.ID {
			case ids.Now:
				nowRuns = append(nowRuns, r.req)
			case ids.Later:
				later = &r
			default:
				t.Fatalf("unexpected task %+v", r.req)
			}
		case <-ctx.Done():
			t.Fatalf("the omnibus worker ran %d runs of %s and later=%v", len(nowRuns), ids.Now, later != nil)
		}
	}
	for i, r := range nowRuns {
		var phone, code string
		if err := r.Bind(&phone, &code); err != nil || phone != "+15550199" || code != "9876" {
			t.Errorf("run %d: Bind %v, %q %q", i, err, phone, code)
		}
		if r.Retries != i || r.Lang != "py" || r.Task != smsTask || r.RootID != ids.Now || r.Origin == "" {
			t.Errorf("run %d of the delayed task: %+v", i, r)
		}
	}
	l := later.req
	var lang string
	if ok, err := l.Kwarg("lang", &lang); !ok || err != nil || lang != "de" {
		t.Errorf("countdown task kwargs %v: %v %v %q", l.Kwargs, ok, err, lang)
	}
	if l.ETA.IsZero() || l.ETA.Sub(sent) < time.Second || l.ETA.Sub(sent) > 5*time.Second {
		t.Errorf("countdown task eta %v, sent at %v with countdown 2s", l.ETA, sent)
	}
	if later.at.Before(l.ETA) {
		t.Errorf("countdown task ran at %v, before its eta %v", later.at, l.ETA)
	}
}

// TestCeleryClientGetsGoResults: a Go worker runs tasks that a real Celery
// client sent, and the client's AsyncResult.get returns the value or
// raises the exception, read from Celery's Redis result backend.
func TestCeleryClientGetsGoResults(t *testing.T) { onBrokers(t, testCeleryClientGetsGoResults) }

func testCeleryClientGetsGoResults(t *testing.T, tr transport) {
	redisURL := brokertest.Redis(t)
	py := python(t)
	queue := tr.queue
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store := redisresult.New(rdb, redisresult.Expires(time.Minute))

	b := openBus(t, ctx, tr)
	w, err := celery.NewWorker(b, queue, celery.Results(store), celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	w.HandleResult(smsTask, func(ctx context.Context, r celery.Request) (any, error) {
		var phone, code string
		if err := r.Bind(&phone, &code); err != nil {
			return nil, bus.NoRetry(err)
		}
		if code == "bad" {
			return nil, bus.NoRetry(&celery.Exception{Type: "ValueError", Message: "invalid code " + code})
		}
		return map[string]any{"sent": true, "phone": phone, "code": code}, nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		w.Shutdown(sctx)
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	client := exec.CommandContext(ctx, py, "sms_tasks.py", "results", queue, "+15550123", "2468")
	client.Dir = "testdata"
	client.Env = tr.env("CELERY_RESULT_BACKEND="+redisURL, "SMS_OUT="+os.DevNull)
	outb, err := client.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("celery client: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("celery client: %v", err)
	}
	var got struct {
		OkID  string         `json:"ok_id"`
		BadID string         `json:"bad_id"`
		Ok    map[string]any `json:"ok"`
		Bad   *struct {
			Type string `json:"type"`
			Args []any  `json:"args"`
		} `json:"bad"`
		BadState task.Status `json:"bad_state"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(outb), &got); err != nil {
		t.Fatalf("celery client output %q: %v", outb, err)
	}
	if got.Ok["sent"] != true || got.Ok["phone"] != "+15550123" || got.Ok["code"] != "2468" {
		t.Errorf("AsyncResult.get() returned %v", got.Ok)
	}
	if got.Bad == nil || got.Bad.Type != "ValueError" || len(got.Bad.Args) != 1 || got.Bad.Args[0] != "invalid code bad" || got.BadState != celery.StateFailure {
		t.Errorf("the failed task's AsyncResult.get() raised %+v, state %s", got.Bad, got.BadState)
	}
	res, err := store.Get(ctx, got.OkID)
	if err != nil || res.Status != celery.StateSuccess || res.DoneAt.IsZero() {
		t.Errorf("stored result %+v, %v", res, err)
	}
	if ttl := rdb.TTL(ctx, redisresult.KeyPrefix+got.OkID).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("result key TTL %v, want at most a minute", ttl)
	}
	rdb.Del(context.Background(), redisresult.KeyPrefix+got.OkID, redisresult.KeyPrefix+got.BadID)
}

// TestGoRetryRunsOnCeleryWorker: a Go worker fails a task a Celery client
// sent and sends Celery's retry; a Celery worker then runs that retry.
// The typed headers (retries, timelimit, nulls) pass through omnibus and
// back to Celery intact.
func TestGoRetryRunsOnCeleryWorker(t *testing.T) { onBrokers(t, testGoRetryRunsOnCeleryWorker) }

func testGoRetryRunsOnCeleryWorker(t *testing.T, tr transport) {
	py := python(t)
	queue := tr.queue
	out := filepath.Join(t.TempDir(), "sms.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	send := exec.CommandContext(ctx, py, "sms_tasks.py", "send", queue, "+15550142", "1357")
	send.Dir = "testdata"
	send.Env = tr.env("SMS_OUT=" + os.DevNull)
	outb, err := send.Output()
	if err != nil {
		t.Fatalf("celery client: %v", err)
	}
	var ids struct{ Now, Later string }
	if err := json.Unmarshal(bytes.TrimSpace(outb), &ids); err != nil {
		t.Fatalf("celery client output %q: %v", outb, err)
	}

	// The Go worker fails the immediate task once and postpones the
	// countdown one; both go back to the queue through omnibus.
	b := openBus(t, ctx, tr)
	w, err := celery.NewWorker(b, queue, celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan struct{})
	w.Handle(smsTask, func(ctx context.Context, r celery.Request) error {
		if r.ID == ids.Now && r.Retries == 0 {
			close(failed)
			return bus.RetryAfter(errors.New("sms gateway busy"), time.Second)
		}
		t.Errorf("the Go worker ran %+v; it should have left it to Celery", r)
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("the Go worker did not get the task")
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	w.Shutdown(sctx)
	if err := <-done; err != nil {
		t.Fatalf("worker: %v", err)
	}

	logs := startCeleryWorker(t, py, tr, out)
	recs := waitRecords(t, ctx, out, 2, logs)
	byID := map[string]smsRecord{}
	for _, rec := range recs {
		byID[rec.ID] = rec
	}
	if r, ok := byID[ids.Now]; !ok || r.Retries != float64(1) || r.ETA == nil || r.Phone != "+15550142" || r.Code != "1357" {
		t.Errorf("the retried task ran on Celery as %+v", r)
	}
	if r, ok := byID[ids.Later]; !ok || r.Retries != float64(0) || r.ETA == nil || r.Lang != "de" {
		t.Errorf("the countdown task ran on Celery as %+v", r)
	}
	if strings.Contains(logs.String(), "ERROR") {
		t.Errorf("the Celery worker logged an error:\n%s", logs)
	}
}

// kind is the JSON kind of an AMQP header value, which is what Celery
// cares about (Python does not tell int32 from int64).
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string, []byte:
		return "string"
	case bool:
		return "bool"
	case int8, int16, int32, int64, int, uint8, uint16, uint32, float32, float64:
		return "number"
	case []any:
		return "list"
	case amqp.Table:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// TestEncodeMatchesCelery compares, as RabbitMQ carries them, a message
// the real Celery client sends with the one Delay sends for the same call:
// every header Celery sets, with the same kind of value, the same
// properties and the same body layout.
func TestEncodeMatchesCelery(t *testing.T) {
	t.Run("rabbitmq", testEncodeMatchesCeleryAMQP)
	t.Run("redis", testEncodeMatchesCeleryRedis)
}

func testEncodeMatchesCeleryAMQP(t *testing.T) {
	tr := rabbitTransport(t)
	url := tr.celeryURL
	py := python(t)
	fromCelery, fromGo := tr.queue, queueFor(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	send := exec.CommandContext(ctx, py, "sms_tasks.py", "send", fromCelery, "+15550100", "4711")
	send.Dir = "testdata"
	send.Env = tr.env("SMS_OUT=" + os.DevNull)
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("celery client: %v\n%s", err, out)
	}
	b := openBus(t, ctx, tr)
	if _, err := celery.Delay(ctx, b, fromGo, smsTask, "+15550100", "4711"); err != nil {
		t.Fatal(err)
	}

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	get := func(q string) amqp.Delivery {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok {
			t.Fatalf("get from %s: %v %v", q, ok, err)
		}
		return d
	}
	py1, go1 := get(fromCelery), get(fromGo)

	for k, v := range py1.Headers {
		g, ok := go1.Headers[k]
		if !ok {
			t.Errorf("Celery sets header %s (%v); Delay does not", k, v)
			continue
		}
		// Like Celery's send_task, which also calls a task by name, Delay
		// leaves ignore_result null so that the task's own setting applies;
		// a task object's apply_async fills in that setting.
		if k == "ignore_result" && g == nil {
			continue
		}
		if kind(g) != kind(v) {
			t.Errorf("header %s: Celery sends a %s (%v), Delay a %s (%v)", k, kind(v), v, kind(g), g)
		}
	}
	if go1.ContentType != py1.ContentType || go1.ContentEncoding != py1.ContentEncoding || go1.DeliveryMode != py1.DeliveryMode {
		t.Errorf("properties: Celery %q %q %d, Delay %q %q %d", py1.ContentType, py1.ContentEncoding, py1.DeliveryMode,
			go1.ContentType, go1.ContentEncoding, go1.DeliveryMode)
	}
	if go1.CorrelationId != go1.Headers["id"] || py1.CorrelationId != py1.Headers["id"] {
		t.Errorf("correlation ids: Celery %s for %v, Delay %s for %v", py1.CorrelationId, py1.Headers["id"], go1.CorrelationId, go1.Headers["id"])
	}
	var pyBody, goBody []any
	if err := json.Unmarshal(py1.Body, &pyBody); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(go1.Body, &goBody); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pyBody) != fmt.Sprint(goBody) {
		t.Errorf("bodies differ: Celery %s, Delay %s", py1.Body, go1.Body)
	}
}

// kombuEnvelope is a message as kombu's Redis transport stores it.
type kombuEnvelope struct {
	Body            string                     `json:"body"`
	ContentEncoding string                     `json:"content-encoding"`
	ContentType     string                     `json:"content-type"`
	Headers         map[string]any             `json:"headers"`
	Properties      map[string]json.RawMessage `json:"properties"`
}

// jsonKind is the JSON kind of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case float64:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// testEncodeMatchesCeleryRedis compares, in the Redis lists of kombu's
// transport, the envelope the real Celery client stores with the one
// Delay stores for the same call: every header with the same kind of
// value, the same properties (but reply_to, which Celery's client sets for
// its result consumer), delivery_info, encodings and body.
func testEncodeMatchesCeleryRedis(t *testing.T) {
	tr := redisTransport(t, nil)
	py := python(t)
	fromCelery, fromGo := tr.queue, brokertest.Name(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	send := exec.CommandContext(ctx, py, "sms_tasks.py", "send", fromCelery, "+15550100", "4711")
	send.Dir = "testdata"
	send.Env = tr.env("SMS_OUT=" + os.DevNull)
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("celery client: %v\n%s", err, out)
	}
	b := openBus(t, ctx, tr)
	if _, err := celery.Delay(ctx, b, fromGo, smsTask, "+15550100", "4711"); err != nil {
		t.Fatal(err)
	}
	rdb := redisClient(t, tr.redisURL)
	defer rdb.Close()
	get := func(q string) (kombuEnvelope, string) {
		// The oldest message, the one sent without a countdown.
		raw, err := rdb.LIndex(ctx, tr.keyPrefix+q, -1).Result()
		if err != nil {
			t.Fatalf("reading list %s: %v", q, err)
		}
		var e kombuEnvelope
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			t.Fatalf("envelope %s: %v", raw, err)
		}
		return e, raw
	}
	py1, pyRaw := get(fromCelery)
	go1, goRaw := get(fromGo)
	for k, v := range py1.Headers {
		g, ok := go1.Headers[k]
		if !ok {
			t.Errorf("Celery sets header %s (%v); Delay does not", k, v)
			continue
		}
		if k == "ignore_result" && g == nil {
			continue // as on RabbitMQ: left to the task's own setting
		}
		if jsonKind(g) != jsonKind(v) {
			t.Errorf("header %s: Celery sends a %s (%v), Delay a %s (%v)", k, jsonKind(v), v, jsonKind(g), g)
		}
	}
	for k, v := range py1.Properties {
		if _, ok := go1.Properties[k]; !ok && k != "reply_to" {
			t.Errorf("Celery sets property %s (%s); Delay does not", k, v)
		}
	}
	for _, k := range []string{"delivery_mode", "priority", "body_encoding"} {
		if string(py1.Properties[k]) != string(go1.Properties[k]) {
			t.Errorf("property %s: Celery %s, Delay %s", k, py1.Properties[k], go1.Properties[k])
		}
	}
	var pyInfo, goInfo map[string]string
	json.Unmarshal(py1.Properties["delivery_info"], &pyInfo)
	json.Unmarshal(go1.Properties["delivery_info"], &goInfo)
	if pyInfo["exchange"] != goInfo["exchange"] || pyInfo["routing_key"] != fromCelery || goInfo["routing_key"] != fromGo {
		t.Errorf("delivery_info: Celery %v, Delay %v", pyInfo, goInfo)
	}
	var corr string
	json.Unmarshal(go1.Properties["correlation_id"], &corr)
	if corr != go1.Headers["id"] {
		t.Errorf("Delay's correlation_id %q is not its task id %v", corr, go1.Headers["id"])
	}
	if py1.ContentType != go1.ContentType || py1.ContentEncoding != go1.ContentEncoding {
		t.Errorf("encodings: Celery %q %q, Delay %q %q", py1.ContentType, py1.ContentEncoding, go1.ContentType, go1.ContentEncoding)
	}
	decode := func(b64 string) []any {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("body %q: %v", b64, err)
		}
		var v []any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("body %s: %v", raw, err)
		}
		return v
	}
	if pb, gb := decode(py1.Body), decode(go1.Body); fmt.Sprint(pb) != fmt.Sprint(gb) {
		t.Errorf("bodies differ: Celery %v, Delay %v", pb, gb)
	}
	if t.Failed() {
		t.Logf("Celery: %s\nDelay:  %s", pyRaw, goRaw)
	}
}

// TestCeleryRestoresTaskOfDeadGoWorker: a Go worker takes a task and its
// process is killed before it acknowledges it; a real Celery worker then
// finds the task in kombu's unacked hash past the visibility timeout,
// puts it back in its queue and runs it. So a Go worker on kombu's Redis
// transport is at least once like a Celery worker, Celery restoring for it.
func TestCeleryRestoresTaskOfDeadGoWorker(t *testing.T) {
	tr := redisTransport(t, map[string]any{"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1})
	py := python(t)
	out := filepath.Join(t.TempDir(), "sms.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	b := openBus(t, ctx, tr)
	id, err := celery.Delay(ctx, b, tr.queue, smsTask, "+15550177", "8642")
	if err != nil {
		t.Fatal(err)
	}
	runGoWorkerAndKill(t, tr, id)
	rdb := redisClient(t, tr.redisURL)
	defer rdb.Close()
	if n := rdb.HLen(ctx, tr.keyPrefix+"unacked").Val(); n != 1 {
		t.Fatalf("kombu's unacked hash holds %d entries after the Go worker died, want 1", n)
	}
	if n := rdb.LLen(ctx, tr.keyPrefix+tr.queue).Val(); n != 0 {
		t.Fatalf("the queue holds %d messages while the task is unacked, want 0", n)
	}

	logs := startCeleryWorker(t, py, tr, out)
	recs := waitRecords(t, ctx, out, 1, logs)
	if r := recs[0]; r.ID != id || r.Phone != "+15550177" || r.Code != "8642" {
		t.Errorf("the Celery worker ran %+v, want task %s", r, id)
	}
	if n := rdb.HLen(ctx, tr.keyPrefix+"unacked").Val(); n != 0 {
		t.Errorf("kombu's unacked hash holds %d entries after Celery ran the task, want 0", n)
	}
}

// runGoWorkerAndKill runs a Go worker in a process of its own (this test
// binary, as TestHelperGoWorker) until it has started task id, then kills
// it with SIGKILL.
func runGoWorkerAndKill(t *testing.T, tr transport, id string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperGoWorker$")
	cmd.Env = append(os.Environ(), "CELERY_HELPER_URL="+tr.busURL, "CELERY_HELPER_QUEUE="+tr.queue)
	logs := &logBuffer{marker: "running " + id, seen: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-logs.seen:
	case err := <-exited:
		t.Fatalf("the Go worker exited before it ran the task: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the Go worker did not start the task within 20s:\n%s", logs)
	}
	cmd.Process.Kill()
	<-exited
}

// TestHelperGoWorker is the Go worker process that
// TestCeleryRestoresTaskOfDeadGoWorker kills: its handler announces the
// task and never returns.
func TestHelperGoWorker(t *testing.T) {
	raw := os.Getenv("CELERY_HELPER_URL")
	if raw == "" {
		t.Skip("the worker process of TestCeleryRestoresTaskOfDeadGoWorker")
	}
	b, err := bus.Open(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	w, err := celery.NewWorker(b, os.Getenv("CELERY_HELPER_QUEUE"), celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	w.Handle(smsTask, func(ctx context.Context, r celery.Request) error {
		fmt.Printf("running %s\n", r.ID)
		select {}
	})
	w.Run(context.Background())
}

// TestGoWorkerRestoresTaskOfDeadCeleryWorker: a real Celery worker takes a
// task and is killed while it runs it; a Go worker then finds the task in
// kombu's unacked hash past the visibility timeout, puts it back in its
// queue and runs it.
func TestGoWorkerRestoresTaskOfDeadCeleryWorker(t *testing.T) {
	tr := redisTransport(t, map[string]any{"visibility_timeout": 2, "unacked_restore_interval": 0.2})
	py := python(t)
	out := filepath.Join(t.TempDir(), "sms.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	b := openBus(t, ctx, tr)
	id, err := celery.Delay(ctx, b, tr.queue, smsTask, "+15550188", "hang")
	if err != nil {
		t.Fatal(err)
	}
	logs := startCeleryWorker(t, py, tr, out)
	recs := waitRecords(t, ctx, out, 1, logs)
	if recs[0].ID != id || recs[0].PID <= 0 {
		t.Fatalf("the Celery worker ran %+v, want task %s", recs[0], id)
	}
	if err := syscall.Kill(recs[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	w, err := celery.NewWorker(b, tr.queue, celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan celery.Request, 2)
	w.Handle(smsTask, func(ctx context.Context, r celery.Request) error {
		ran <- r
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		w.Shutdown(sctx)
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	select {
	case r := <-ran:
		var phone, code string
		if err := r.Bind(&phone, &code); err != nil || r.ID != id || phone != "+15550188" || code != "hang" {
			t.Errorf("the Go worker ran %+v (%v)", r, err)
		}
		if since := time.Since(killed); since > 30*time.Second {
			t.Errorf("restored %v after the Celery worker died", since)
		}
	case <-ctx.Done():
		t.Fatalf("the Go worker did not get the task of the dead Celery worker:\n%s", logs)
	}
}
