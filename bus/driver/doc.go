// Package driver is the layer under package bus that every backend is
// written on: a portable Broker that owns the rules all backends share,
// over a thin Driver that an adapter implements for one broker.
//
// The portable side (New, and the Broker it returns) checks every call,
// validates and fills in messages, applies the defaults of
// bus.SubscribeOptions, keeps each subscription's prefetch window full
// and never over it, settles each delivery exactly once, decides between
// retrying and dead-lettering (attempts, bus.NackOptions, with DeadLetter
// winning over Postpone), builds dead letters with their headers,
// dead-letters on receipt what was delivered more than MaxAttempts times
// without being settled, retries failed receives with backoff, and gives
// back at Close what a subscription held. A driver does only what is its
// broker's: store a batch, receive up to n deliveries, ack, retry after a
// delay, store a dead letter, give deliveries back.
//
// # Adding a backend
//
//  1. Implement Driver (Send, Subscribe, Features, Close), Subscription
//     (Receive, Close) and Delivery (Message, Ack, Retry, DeadLetter).
//     Implement HandOff on deliveries the broker can take back while they
//     wait in the window (leases, partitions), and Malformed on
//     deliveries of entries that are not messages.
//  2. Have the adapter's constructor return a type that embeds the
//     *Broker that New returns over the driver, so that it is a
//     bus.Broker with Shutdown.
//  3. Parse the URL with Params, which reads the parameters common to
//     every backend with one spelling (dial_timeout, max_message_size, the
//     TLS ones) and reports every problem at once, and register the
//     scheme with bus.Register.
//  4. Map the broker's errors onto the sentinels of package bus
//     (bus.ErrUnreachable, bus.ErrAuth, bus.ErrForbidden, ...) at the
//     driver's boundary, wrapped with %w.
//  5. Run the conformance suite, bus/bustest, from the adapter's tests
//     with the backend's features; it runs the portable Broker over the
//     driver, so it tests both.
//  6. Give the adapter a module of its own when its client library brings
//     dependencies, so that users of other backends do not inherit them.
//
// A new backend that needs more than its driver methods, its URL and its
// tests is a sign that this layer is missing something: add it here.
package driver
