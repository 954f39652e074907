// Package memory is omnibus's in-process backend: a real broker that lives
// in the process, needs no server, and keeps the semantics of the others —
// consumer groups that each get every message, competing consumers within a
// group, prefetch windows, nack with delayed redelivery, attempt counting
// and dead-lettering, and redelivery of whatever a closed subscription
// left unsettled.
//
// Open it by URL after importing the package:
//
//	b, err := bus.Open(ctx, "mem://")       // the process's default broker
//	b, err := bus.Open(ctx, "mem://orders") // a broker named "orders"
//
// or build a private one with New. Messages do not survive the process, so
// it suits tests, development, and work that may be lost with the process.
package memory
