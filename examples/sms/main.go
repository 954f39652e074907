// Command sms is an SMS verification service: an HTTP API that sends
// codes through a task queue, and the worker that sends them, in one
// process. It runs on the in-process broker by default and on any other
// backend by URL:
//
//	go run ./examples/sms -demo    # one request and verification against itself, then exit
//	go run ./examples/sms          # serve on 127.0.0.1:8080 until SIGINT or SIGTERM
//	go run ./examples/sms -broker amqp://guest:guest@127.0.0.1:5672/ -redis redis://127.0.0.1:6379/0
//	go run ./examples/sms -broker kafka://127.0.0.1:9092 -redis redis://127.0.0.1:6379/0
//	go run ./examples/sms -broker redis://127.0.0.1:6379/0 -redis redis://127.0.0.1:6379/0
//	go run ./examples/sms -broker rocketmq://127.0.0.1:9876 -redis redis://127.0.0.1:6379/0
//
// The API:
//
//	POST /codes         {"phone":"+15555550100"}
//	                    202 {"task_id":"..."}; 400 bad phone; 429 with Retry-After
//	                    while the phone's resend lock is held
//	POST /codes/verify  {"phone":"+15555550100","code":"123456"}
//	                    200 {"verified":true}; 401 wrong, expired or used code;
//	                    429 attempts used up; 400 bad input
//
// Without -redis the codes live in this process, which suits one instance;
// with it, any number of instances share them. -provider http POSTs each
// SMS as JSON to -gateway; the default console provider prints it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	_ "github.com/omnibus-mq/omnibus/adapters/memory"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	_ "github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/handlers/sms"
	"github.com/omnibus-mq/omnibus/internal/redisconn"
	"github.com/omnibus-mq/omnibus/task"
)

type options struct {
	broker      string
	redis       string
	addr        string
	provider    string
	gateway     string
	queue       string
	concurrency int
	demo        bool
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "mem://", "broker URL: mem://, amqp://, kafka://, redis://")
	flag.StringVar(&o.redis, "redis", "", "Redis URL of the code store (redis://, rediss://, redis+cluster://, redis+sentinel://); empty keeps codes in this process")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "HTTP listen address (with -demo, default a free port)")
	flag.StringVar(&o.provider, "provider", "console", "SMS provider: console or http")
	flag.StringVar(&o.gateway, "gateway", "", "gateway URL for -provider http")
	flag.StringVar(&o.queue, "queue", sms.SendTask.Queue(), "queue of the send tasks")
	flag.IntVar(&o.concurrency, "c", 4, "SMS sent at once by the worker")
	flag.BoolVar(&o.demo, "demo", false, "request and verify one code against this server, then exit")
	flag.Parse()
	if o.demo && !flagSet("addr") {
		o.addr = "127.0.0.1:0"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, o, os.Stdout, log); err != nil {
		log.Error("sms: " + err.Error())
		os.Exit(1)
	}
}

func flagSet(name string) (set bool) {
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// run serves until ctx is done (or the demo ends), then shuts down: the
// HTTP server stops taking requests and finishes the ones in flight, then
// the worker finishes the SMS in flight and leaves the rest to the broker.
func run(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) error {
	// The worker's console provider and the demo write to it at once.
	stdout = &lockedWriter{w: stdout}
	provider, err := newProvider(o, stdout)
	if err != nil {
		return err
	}
	var sent chan string
	if o.demo {
		// The demo plays the user, who reads the code off the SMS.
		sent = make(chan string, 1)
		inner := provider
		provider = sms.ProviderFunc(func(ctx context.Context, phone, text string) error {
			if err := inner.Send(ctx, phone, text); err != nil {
				return err
			}
			select {
			case sent <- text:
			default:
			}
			return nil
		})
	}
	a, err := newApp(ctx, o, provider, log)
	if err != nil {
		return err
	}
	defer a.close()

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.api, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	worked := make(chan error, 1)
	go func() { worked <- a.worker.Run(wctx) }()
	base := "http://" + ln.Addr().String()
	log.Info("sms: serving", "url", base, "broker", redactURL(o.broker), "queue", o.queue)

	var failure, workerErr error
	workerDone := false
	if o.demo {
		failure = demo(ctx, base, sent, stdout)
	} else {
		select {
		case <-ctx.Done():
		case err := <-served:
			failure = fmt.Errorf("http: %w", err)
		case workerErr = <-worked:
			// The worker stops early only when its broker fails it.
			workerDone = true
		}
	}

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		failure = errors.Join(failure, fmt.Errorf("http shutdown: %w", err))
	}
	stopWorker()
	if !workerDone {
		workerErr = <-worked
	}
	if workerErr != nil {
		failure = errors.Join(failure, fmt.Errorf("worker: %w", workerErr))
	}
	return failure
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newProvider(o options, stdout io.Writer) (sms.Provider, error) {
	switch o.provider {
	case "console":
		return sms.NewConsole(stdout), nil
	case "http":
		if o.gateway == "" {
			return nil, errors.New("-provider http needs -gateway URL")
		}
		return sms.NewHTTP(sms.HTTPConfig{URL: o.gateway})
	}
	return nil, fmt.Errorf("-provider %q: want console or http", o.provider)
}

// app is the service's parts: the API and the worker share the broker
// and the code store.
type app struct {
	broker bus.Broker
	rdb    redis.UniversalClient // nil with the in-process code store
	store  *sms.RedisStore       // nil with the in-process code store
	svc    *sms.Service
	worker *task.Worker
	api    http.Handler
}

func newApp(ctx context.Context, o options, p sms.Provider, log *slog.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if a.broker, err = bus.Open(dctx, o.broker); err != nil {
		return nil, err
	}
	var store sms.CodeStore = sms.NewMemoryStore()
	if o.redis != "" {
		if a.rdb, err = redisconn.Open(o.redis); err != nil {
			return nil, fmt.Errorf("-redis: %w", err)
		}
		if err := a.rdb.Ping(dctx).Err(); err != nil {
			return nil, fmt.Errorf("code store at %s: %w", redactURL(o.redis), err)
		}
		a.store = sms.NewRedisStore(a.rdb)
		store = a.store
	}
	if a.svc, err = sms.New(sms.Config{Store: store, Publisher: a.broker, Queue: o.queue}); err != nil {
		return nil, err
	}
	a.worker, err = task.NewWorker(a.broker, task.WorkerConfig{
		Queues:          []string{o.queue},
		Concurrency:     max(o.concurrency, 1),
		ShutdownTimeout: 10 * time.Second,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	if err := sms.Register(a.worker, p); err != nil {
		return nil, err
	}
	a.api = newAPI(a.svc, log)
	return a, nil
}

// close releases the connections; the worker must have stopped.
func (a *app) close() {
	if a.broker != nil {
		a.broker.Close()
	}
	if a.rdb != nil {
		a.rdb.Close()
	}
}

func redactURL(raw string) string {
	u, err := bus.ParseURL(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, has := u.User.Password(); !has {
		return raw
	}
	return u.Redacted()
}

// requestTimeout bounds the store and broker calls of one API request, so
// that a stalled backend gets a 503 rather than a hung client.
const requestTimeout = 10 * time.Second

// newAPI returns the HTTP API of svc.
func newAPI(svc *sms.Service, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /codes", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Phone string `json:"phone"`
		}
		if !decode(w, r, &in) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		id, err := svc.Request(ctx, in.Phone)
		var soon *sms.TooSoonError
		switch {
		case err == nil:
			reply(w, http.StatusAccepted, map[string]any{"task_id": id})
		case errors.As(err, &soon):
			secs := int(math.Ceil(soon.RetryAfter.Seconds()))
			w.Header().Set("Retry-After", fmt.Sprint(secs))
			reply(w, http.StatusTooManyRequests, map[string]any{"error": "a code was sent recently", "retry_after": secs})
		case errors.Is(err, sms.ErrInvalidPhone):
			reply(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		default:
			unavailable(w, log, "request a code", err)
		}
	})
	mux.HandleFunc("POST /codes/verify", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Phone string `json:"phone"`
			Code  string `json:"code"`
		}
		if !decode(w, r, &in) {
			return
		}
		if in.Code == "" {
			// A client's mistake, not a guess: no attempt is used.
			reply(w, http.StatusBadRequest, map[string]any{"error": "code is required"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		err := svc.Verify(ctx, in.Phone, in.Code)
		var wrong *sms.WrongCodeError
		switch {
		case err == nil:
			reply(w, http.StatusOK, map[string]any{"verified": true})
		case errors.Is(err, sms.ErrInvalidPhone):
			reply(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		case errors.Is(err, sms.ErrTooManyAttempts):
			reply(w, http.StatusTooManyRequests, map[string]any{"error": "too many attempts; request a new code"})
		case errors.As(err, &wrong):
			reply(w, http.StatusUnauthorized, map[string]any{"error": "wrong code", "attempts_left": wrong.Remaining})
		case errors.Is(err, sms.ErrNoCode):
			reply(w, http.StatusUnauthorized, map[string]any{"error": "no valid code: it expired or was used; request a new one"})
		default:
			unavailable(w, log, "verify a code", err)
		}
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(v); err != nil {
		reply(w, http.StatusBadRequest, map[string]any{"error": "want a JSON body: " + err.Error()})
		return false
	}
	return true
}

// unavailable answers 503: the broker or the store failed, and the details
// go to the log rather than to the client.
func unavailable(w http.ResponseWriter, log *slog.Logger, what string, err error) {
	log.Error("sms: "+what, "error", err)
	reply(w, http.StatusServiceUnavailable, map[string]any{"error": "service unavailable; try again"})
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
