package task

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
)

type fuzzArgs struct {
	Phone string            `json:"phone"`
	Code  int               `json:"code"`
	Tags  []string          `json:"tags"`
	Extra map[string]string `json:"extra"`
}

// FuzzHandle feeds a worker messages with any task name, body and
// time headers, as a broker may hand it from any producer. It never
// panics; a body that is not the task's JSON fails, without retry, with
// ErrBadPayload; an unknown name with ErrUnknownTask; and the handler runs
// only with arguments that decode.
func FuzzHandle(f *testing.F) {
	const name = "fuzz.task"
	f.Add(name, []byte(`{"phone":"+1","code":7}`), "", "", 1)
	f.Add(name, []byte(`{"code":"x"}`), "2000-01-01T00:00:00Z", "", 3)
	f.Add(name, []byte("\xff{"), "", "not a time", 0)
	f.Add("", []byte(nil), "9999-12-31T23:59:59Z", "", -1)
	f.Add(name, []byte(`null`), "", "2000-01-01T00:00:00Z", 1<<30)
	f.Add("other", []byte(`{}`), "", "", 1)
	f.Add(name, []byte(`{"tags":[1]}`), "3000-01-01T00:00:00+14:00", "", 2)
	w, err := NewWorker(memory.New(memory.Options{}), WorkerConfig{Results: NewMemoryStore(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	t := Define[fuzzArgs](name, MaxRetries(2))
	HandleResult(w, t, func(_ context.Context, a fuzzArgs) (fuzzArgs, error) { return a, nil })
	f.Fuzz(func(t *testing.T, task string, body []byte, eta, expires string, attempt int) {
		m := &bus.Message{ID: "id", Body: body, Attempt: attempt, Headers: bus.Headers{
			bus.HeaderTask: task, HeaderETA: eta, HeaderExpires: expires}}
		err := w.handle(t.Context(), "q", m)
		var args fuzzArgs
		decodes := json.Unmarshal(body, &args) == nil
		switch {
		case task != name:
			if !errors.Is(err, ErrUnknownTask) || !errors.Is(err, bus.ErrNoRetry) {
				t.Fatalf("task %q: %v, want ErrUnknownTask without retry", task, err)
			}
		case err == nil:
			if !decodes {
				t.Fatalf("body %q does not decode, yet the task succeeded", body)
			}
		case errors.Is(err, ErrBadPayload):
			if decodes || !errors.Is(err, bus.ErrNoRetry) {
				t.Fatalf("body %q: %v, want ErrBadPayload without retry only for bodies that do not decode", body, err)
			}
		case errors.Is(err, ErrExpired), errors.Is(err, bus.ErrDrop):
		default:
			// Only a postponement (an ETA ahead) is left.
			if d, asked := bus.RetryDelay(err); asked || d != 0 {
				t.Fatalf("%v: unexpected retry", err)
			}
			if ts, perr := time.Parse(time.RFC3339Nano, eta); perr != nil || !ts.After(time.Now().Add(-time.Minute)) {
				t.Fatalf("eta %q: %v", eta, err)
			}
		}
	})
}
