// Package celery lets Go and Python share Celery's task queues: Go code
// can enqueue tasks that Celery 5 workers run, and run tasks that Celery
// clients sent with delay or apply_async.
//
// It speaks Celery's message protocol version 2 over any omnibus broker.
// On RabbitMQ open the broker with ?topology=queue, so that a topic is the
// plain queue of that name that Celery uses:
//
//	b, err := bus.Open(ctx, "amqp://guest:guest@127.0.0.1:5672/?topology=queue")
//	id, err := celery.Delay(ctx, b, "celery", "tasks.send_sms_code", "+15550100", "4711")
//
// On Redis open it through adapters/kombu, which keeps Celery's queues as
// kombu's Redis transport does (lists of JSON envelopes, the unacked hash
// and index, visibility-timeout restores); its URL names the server as
// Celery's broker_url does, and its global_keyprefix and
// visibility_timeout parameters must match Celery's transport options:
//
//	b, err := bus.Open(ctx, "kombu+redis://127.0.0.1:6379/0")
//
// and run Celery's tasks in Go:
//
//	w, err := celery.NewWorker(b, "celery")
//	w.Handle("tasks.send_sms_code", func(ctx context.Context, r celery.Request) error {
//		var phone, code string
//		if err := r.Bind(&phone, &code); err != nil {
//			return bus.NoRetry(err)
//		}
//		return sms.Send(ctx, phone, code)
//	})
//	err = w.Run(ctx)
//
// # Headers
//
// Celery's headers are typed (retries is an integer, timelimit a list,
// eta may be null) while bus.Headers are strings. A message built here
// carries each non-string header as JSON text and lists those names in
// the HeaderTyped header; the RabbitMQ adapter turns them back into typed
// AMQP values on publish, and does the reverse on receipt, so the
// headers reach Celery exactly as Celery sends them. The kombu adapter
// does the same with the JSON values of kombu's envelope.
//
// # Semantics
//
// A Worker acknowledges a message only after its handler returned, so a
// task runs at least once, like a Celery worker with acks_late. A task
// whose eta is in the future is put off with bus.Postpone until it is due
// rather than held in memory, so it takes no prefetch slot. (On kombu's
// Redis transport a postponed task waits in a sorted set of omnibus's
// that only Go workers move from, so a queue whose eta tasks a Go worker
// postponed needs a Go worker running until they are due.) An expired
// task is discarded. A failed task is sent again as Celery's retry does,
// with retries one higher and a countdown, until MaxRetries is reached;
// then it goes to the queue's dead-letter topic. A task with a name no
// handler is registered for, and a message that is not a Celery task, go
// to the dead-letter topic too, where a Celery worker would discard them;
// so a Go worker and a Python worker should not share a queue unless
// both know every task sent to it.
//
// # Results
//
// With the Results option a Worker records each outcome for Celery
// clients: celery/redisresult writes Celery's Redis result backend
// format, so AsyncResult(id).get() in Python returns a Go handler's value
// (HandleResult) or raises its error (see Exception).
//
// # Limits
//
// Only the JSON serializer is read; messages in pickle, yaml or msgpack
// are refused with ErrContentType. Encode does not set RabbitMQ's
// per-message expiration, which Celery adds when a task expires; workers
// check the expires header themselves. Canvas fields (callbacks, chains,
// chords) are carried in Request.Embed but not acted on.
package celery
