// Package chaos injects faults into omnibus running on real brokers and
// checks that no message a publisher saw confirmed is lost.
//
// It starts a broker instance of its own (Redis, RabbitMQ, Kafka or
// RocketMQ, on free loopback ports with a data directory of its own), so
// that killing the broker disturbs nothing else, and runs scenarios
// against it while every message ID is tracked in a Ledger: the broker is
// SIGKILLed and restarted with confirmed messages in its store, a
// consumer process is SIGKILLed mid-work, handlers panic, hang and fail
// every time, and a consumer process is stopped with SIGTERM while work
// is in flight.
//
// The scenarios run as the package's tests (go test ./chaos/); see
// README.md for what each one asserts and the latest measured table.
package chaos
