package celery

import (
	"context"

	"github.com/omnibus-mq/omnibus/bus"
)

// Delay sends task with positional arguments to queue, as Celery's
// task.delay does, and returns the task id. The arguments must encode as
// JSON.
func Delay(ctx context.Context, p bus.Publisher, queue, task string, args ...any) (string, error) {
	r, err := NewRequest(task, args, nil)
	if err != nil {
		return "", err
	}
	return Apply(ctx, p, queue, r)
}

// Apply sends r to queue, as Celery's apply_async does, and returns the
// task id (r.ID, or the one assigned). Set r.ETA for a countdown.
func Apply(ctx context.Context, p bus.Publisher, queue string, r Request) (string, error) {
	m, err := Encode(r)
	if err != nil {
		return "", err
	}
	if err := p.Publish(ctx, queue, m); err != nil {
		return "", err
	}
	return m.ID, nil
}
