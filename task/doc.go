// Package task is omnibus's Celery-like task layer: named tasks with typed
// arguments, enqueued with Delay (which returns the task id at once) and
// run by workers on any omnibus backend.
//
//	type SMS struct{ Phone, Code string }
//
//	var SendSMS = task.Define[SMS]("sms.send", task.OnQueue("sms"), task.MaxRetries(5))
//
//	// producer
//	id, err := SendSMS.Delay(ctx, broker, SMS{Phone: "+15550100", Code: "123456"})
//	id, err = SendSMS.Apply(ctx, broker, args, task.Countdown(time.Minute))
//
//	// worker
//	w, err := task.NewWorker(broker, task.WorkerConfig{Concurrency: 8, Results: store})
//	err = task.Handle(w, SendSMS, func(ctx context.Context, s SMS) error { return gateway.Send(ctx, s) }) // ErrDuplicateTask for a second handler
//	err = w.Run(ctx) // until ctx is cancelled (SIGTERM), then a graceful shutdown
//
// Failures retry with exponential backoff and jitter until MaxRetries, then
// the task is dead-lettered with its error; bus.NoRetry(err) dead-letters at
// once. An unknown task name or arguments that do not decode are
// dead-lettered with ErrUnknownTask or ErrBadPayload, never retried.
//
// Countdown and ETA tasks are published at once and carry their ETA; a
// worker that receives one early hands it back to the broker with
// bus.Postpone, which every backend holds durably (RabbitMQ TTL queues,
// Redis sorted sets, Kafka retry topics), so a delayed task survives worker
// restarts, and nothing waits on a visibility timeout to run it twice.
//
// A worker given a Store records each task's state (STARTED, RETRY,
// SUCCESS with its result, FAILURE with its error), readable by id; Get of
// an unknown id says PENDING. Metrics counts outcomes for Prometheus, and
// trace context travels in the headers (see Propagator).
package task
