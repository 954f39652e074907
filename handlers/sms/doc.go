// Package sms sends and verifies SMS verification codes, with the sending
// moved out of the request path onto an omnibus task queue.
//
// A Service draws a 6-digit code (crypto/rand, uniform), saves it with a
// TTL together with the phone's resend lock in one atomic step, and
// enqueues SendTask; the HTTP handler that called it answers at once. A
// worker on any omnibus backend runs SendTask through a Provider: Console
// for development, HTTP for a real gateway, or your own.
//
//	store := sms.NewRedisStore(redis.NewClient(opt)) // or sms.NewMemoryStore()
//	svc, err := sms.New(sms.Config{Store: store, Publisher: broker})
//
//	// request handler
//	id, err := svc.Request(ctx, "+15555550100") // ErrTooSoon inside the resend window
//
//	// verify handler
//	err = svc.Verify(ctx, "+15555550100", "042137") // nil once; then ErrNoCode
//
//	// worker
//	w, err := task.NewWorker(broker, task.WorkerConfig{})
//	sms.Register(w, sms.NewConsole(os.Stdout))
//	err = w.Run(ctx)
//
// Codes live under sms_<phone> and resend locks under is_send_<phone>
// (on a Redis Cluster with the phone as hash tag, sms_{<phone>}; see
// RedisStore for the layout and why Save is a Lua script). A code
// allows Config.MaxAttempts verifications, compared in constant time, and
// is consumed by the first that matches, even among concurrent ones.
//
// Errors are matched with errors.Is: ErrInvalidPhone, ErrTooSoon (a
// *TooSoonError with the wait left), ErrNoCode, ErrWrongCode (a
// *WrongCodeError with the attempts left) and ErrTooManyAttempts.
//
// The examples/sms program serves this over HTTP with a worker in the same
// process, on any broker URL.
package sms
