package celery

import (
	"context"
	"errors"
	"time"

	"github.com/omnibus-mq/omnibus/task"
)

// Task states as Celery's result backends record them: the states of
// package task.
const (
	StatePending = task.Pending
	StateStarted = task.Started
	StateRetry   = task.Retry
	StateSuccess = task.Success
	StateFailure = task.Failure
	StateRevoked = task.Revoked
)

// Result is a task's outcome as Celery's result backends keep it.
type Result struct {
	TaskID string
	// Status is one of the State constants.
	Status task.Status
	// Value is the task's return value on success; on failure, retry or
	// revocation the exception Celery clients raise (see Exception).
	Value any
	// Traceback is text shown with a failure; it may be empty.
	Traceback string
	// DoneAt is when the task finished; zero for states not yet final.
	DoneAt time.Time
	// ParentID and GroupID come from the request, when it had them.
	ParentID, GroupID string
}

// ResultStore records results where Celery clients look for them
// (AsyncResult.get). celery/redisresult has one for Celery's Redis
// result backend.
type ResultStore interface {
	StoreResult(ctx context.Context, r Result) error
}

// Exception is an error as a Celery client re-raises it: Python's
// exception type (looked up in Module, which must define it, or made up
// by Celery when it does not) and its arguments. A handler returns one,
// or wraps one, to choose what AsyncResult.get raises.
type Exception struct {
	Type    string // such as "ValueError"; default "Exception"
	Module  string // such as "builtins"; default "builtins"
	Message string
}

func (e *Exception) Error() string { return e.Type + ": " + e.Message }

// exceptionValue is err in the form of Celery's JSON-serialized
// exceptions.
func exceptionValue(err error) map[string]any {
	e := &Exception{Message: err.Error()}
	var x *Exception
	if errors.As(err, &x) {
		e = x
	}
	typ, mod := e.Type, e.Module
	if typ == "" {
		typ = "Exception"
	}
	if mod == "" {
		mod = "builtins"
	}
	return map[string]any{"exc_type": typ, "exc_message": []any{e.Message}, "exc_module": mod}
}
