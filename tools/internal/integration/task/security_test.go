package task_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/task"
)

// TestNoPasswordInMetricsOrLogs runs a worker as the password-protected
// user of scripts/brokers. Its task fails with the error of a connection
// refused for a wrong password, and a second worker consumes a queue the
// user may not use. The password appears neither in the logs, nor in the
// Prometheus text of Metrics, nor in the errors.
func TestNoPasswordInMetricsOrLogs(t *testing.T) {
	sec := brokertest.Secure(t)
	for _, tg := range []struct {
		name, addr string
		url        func(password string) string
	}{
		{"rabbitmq", sec.AMQPAddr, func(pw string) string {
			return (&url.URL{Scheme: "amqp", User: url.UserPassword(sec.User, pw), Host: sec.AMQPAddr, Path: "/" + sec.AMQPVhost}).String()
		}},
		{"redis", sec.RedisAddr, func(pw string) string {
			return (&url.URL{Scheme: "redis", User: url.UserPassword(sec.User, pw), Host: sec.RedisAddr, Path: "/0"}).String()
		}},
	} {
		t.Run(tg.name, func(t *testing.T) {
			sec.Require(t, tg.name, tg.addr)
			logger, logs := brokertest.Logs()
			b := open(t, tg.url(sec.Password))
			metrics := task.NewMetrics()
			queue := brokertest.Name(t)
			connect := task.Define[string]("connect", task.OnQueue(queue), task.MaxRetries(0))
			w, err := task.NewWorker(b, task.WorkerConfig{Observers: []func(task.Event){metrics.Observe}, Logger: logger, Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			var handlerErr error
			task.Handle(w, connect, func(ctx context.Context, raw string) error {
				_, err := bus.Open(ctx, raw)
				handlerErr = err
				return err
			})
			stop := run(t, w)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := connect.Delay(ctx, b, tg.url("wrong-"+sec.Password)); err != nil {
				t.Fatalf("Delay: %v", err)
			}
			for metrics.Count("connect", task.Failure) == 0 {
				select {
				case <-ctx.Done():
					t.Fatalf("the task did not fail within 30s; logs:\n%s", logs())
				case <-time.After(50 * time.Millisecond):
				}
			}
			stop()
			if !errors.Is(handlerErr, bus.ErrAuth) {
				t.Fatalf("the task's connection: %v; want ErrAuth", handlerErr)
			}

			forbidden, err := task.NewWorker(b, task.WorkerConfig{Queues: []string{"forbidden-" + bus.NewID()}, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			runErr := forbidden.Run(ctx)
			if !errors.Is(runErr, bus.ErrForbidden) {
				t.Fatalf("a worker on a forbidden queue: %v; want ErrForbidden", runErr)
			}

			var text bytes.Buffer
			if _, err := metrics.WriteTo(&text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), `omnibus_tasks_total{task="connect",status="failure"} 1`) {
				t.Errorf("metrics lack the failure:\n%s", text.String())
			}
			if !strings.Contains(logs(), "authentication failed") {
				t.Errorf("the logs lack the task's failure:\n%s", logs())
			}
			for what, s := range map[string]string{"logs": logs(), "metrics": text.String(),
				"task error": handlerErr.Error(), "worker error": runErr.Error()} {
				if strings.Contains(s, sec.Password) {
					t.Errorf("the %s show the password:\n%s", what, s)
				}
			}
		})
	}
}
