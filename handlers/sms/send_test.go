package sms

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

// gateway is a fake SMS gateway answering with the given statuses in turn
// (the last one thereafter) and recording the requests.
type gateway struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	bodies   []Message
	auth     []string
}

func newGateway(t *testing.T, statuses ...int) *gateway {
	g := &gateway{statuses: statuses}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m Message
		err := json.NewDecoder(r.Body).Decode(&m)
		g.mu.Lock()
		status := g.statuses[min(len(g.bodies), len(g.statuses)-1)]
		g.bodies = append(g.bodies, m)
		g.auth = append(g.auth, r.Header.Get("Authorization"))
		g.mu.Unlock()
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			status = http.StatusUnsupportedMediaType
		}
		w.WriteHeader(status)
		io.WriteString(w, `{"echo":"`+m.Text+`"}`)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateway) requests() []Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Message(nil), g.bodies...)
}

func httpProvider(t *testing.T, url string) *HTTP {
	t.Helper()
	p, err := NewHTTP(HTTPConfig{URL: url, Header: http.Header{"Authorization": {"Bearer test-token"}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var quiet = slog.New(slog.DiscardHandler)

// sendThroughWorker enqueues one SendTask on a fresh queue of a memory
// broker, runs a worker with p until the task is final, and returns its
// state and the broker.
func sendThroughWorker(t *testing.T, p Provider, m Message) (task.State, bus.Broker, string) {
	t.Helper()
	b := memory.New(memory.Options{})
	t.Cleanup(func() { b.Close() })
	q := "sms-" + bus.NewID()
	results := task.NewMemoryStore()
	w, err := task.NewWorker(b, task.WorkerConfig{Queues: []string{q}, Results: results, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	Register(w, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	id, err := SendTask.Apply(ctx, b, m, task.OnQueue(q))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	s, err := task.Wait(wctx, results, id)
	if err != nil {
		t.Fatalf("task %s: %v (last state %+v)", id, err, s)
	}
	return s, b, q
}

func TestHTTPProviderRetriesGatewayErrors(t *testing.T) {
	g := newGateway(t, 503, 503, 200)
	msg := Message{Phone: "+15555550100", Text: "Your code is 123456"}
	s, _, _ := sendThroughWorker(t, httpProvider(t, g.URL), msg)
	if s.Status != task.Success || s.Attempt != 3 {
		t.Fatalf("task state %+v, want SUCCESS on attempt 3", s)
	}
	reqs := g.requests()
	if len(reqs) != 3 {
		t.Fatalf("gateway got %d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r != msg || g.auth[i] != "Bearer test-token" {
			t.Fatalf("request %d: %+v with Authorization %q", i, r, g.auth[i])
		}
	}
}

func TestHTTPProviderDeadLettersRefusals(t *testing.T) {
	g := newGateway(t, 400)
	s, b, q := sendThroughWorker(t, httpProvider(t, g.URL), Message{Phone: "+15555550100", Text: "Your code is 123456"})
	if s.Status != task.Failure || s.Attempt != 1 || !strings.Contains(s.Error, "400") {
		t.Fatalf("task state %+v, want FAILURE on attempt 1 with the gateway's 400", s)
	}
	if n := len(g.requests()); n != 1 {
		t.Fatalf("gateway got %d requests, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, q+".dlq", bus.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("no dead letter on %s.dlq: %v", q, err)
	}
	d.Ack(ctx)
	if dl := d.Message(); dl.ID != s.ID || !strings.Contains(dl.Headers.Get(bus.HeaderError), "400") {
		t.Fatalf("dead letter %s %v", dl.ID, dl.Headers)
	}
}

func TestHTTPProviderErrors(t *testing.T) {
	const text = "Your code is 123456"
	ctx := context.Background()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	timeout, err := NewHTTP(HTTPConfig{URL: slow.URL + "?key=secret", Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		p     *HTTP
		retry bool
	}{
		"timeout": {timeout, true},
		"refused": {httpProvider(t, closed.URL+"?key=secret"), true},
		"429":     {httpProvider(t, newGateway(t, 429).URL+"?key=secret"), true},
		"500":     {httpProvider(t, newGateway(t, 500).URL+"?key=secret"), true},
		"404":     {httpProvider(t, newGateway(t, 404).URL+"?key=secret"), false},
		"401":     {httpProvider(t, newGateway(t, 401).URL+"?key=secret"), false},
	} {
		err := c.p.Send(ctx, "+15555550100", text)
		if err == nil || errors.Is(err, bus.ErrNoRetry) == c.retry {
			t.Errorf("%s: Send = %v, want an error that is retried: %v", name, err, c.retry)
			continue
		}
		if strings.Contains(err.Error(), "123456") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %q shows the text or the URL's query", name, err)
		}
	}
	if err := httpProvider(t, newGateway(t, 202).URL).Send(ctx, "+15555550100", text); err != nil {
		t.Errorf("202: Send = %v", err)
	}
}

func TestNewHTTPValidates(t *testing.T) {
	_, err := NewHTTP(HTTPConfig{URL: "ftp://gw", Timeout: -1})
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("NewHTTP(bad) = %v, want 2 problems", err)
	}
	if _, err := NewHTTP(HTTPConfig{}); err == nil {
		t.Fatal("NewHTTP without a URL succeeded")
	}
}

func TestConsole(t *testing.T) {
	var out strings.Builder
	if err := NewConsole(&out).Send(context.Background(), "+15555550100", "Your code is 123456"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "SMS to +15555550100: Your code is 123456\n" {
		t.Fatalf("console wrote %q", out.String())
	}
}

func TestHandlerRefusesBadPhone(t *testing.T) {
	called := false
	h := Handler(ProviderFunc(func(context.Context, string, string) error { called = true; return nil }))
	err := h(context.Background(), Message{Phone: "12345", Text: "hi"})
	if !errors.Is(err, ErrInvalidPhone) || !errors.Is(err, bus.ErrNoRetry) || called {
		t.Fatalf("handler with a bad phone = %v (provider called: %v), want ErrInvalidPhone, not retried", err, called)
	}
}
