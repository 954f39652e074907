// Package task holds the task layer's tests on every real broker: results,
// retries, dead letters, countdowns that survive a killed worker, expiry,
// time limits, trace context, secrets kept out of logs and metrics, and
// the worker benchmark. They live here, beside the tools, because they need
// every adapter at once.
package task
