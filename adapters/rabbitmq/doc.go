// Package rabbitmq is omnibus's RabbitMQ backend, built on
// github.com/rabbitmq/amqp091-go.
//
// Open it by URL after importing the package, or build it with New:
//
//	b, err := bus.Open(ctx, "amqp://guest:guest@127.0.0.1:5672/")
//	b, err := rabbitmq.New(ctx, rabbitmq.Options{URL: "amqps://user:pass@host/vhost"})
//
// # Topology
//
// By default a topic is a durable fanout exchange and a consumer group is
// a durable queue "<topic>.<group>" bound to it, so each group gets every
// message and the consumers of one group compete. Publish also declares
// the queue of bus.DefaultGroup, so messages sent before any worker runs
// are kept (Options.NoDefaultGroup turns that off). With
// ?topology=queue (TopologyQueue) a topic is simply the durable queue of
// that name on the default exchange, as classic RabbitMQ clients and Celery
// use it.
//
// # Guarantees
//
// Messages are persistent and Publish waits for publisher confirms,
// pipelined over a window of unconfirmed messages per channel, for at
// most Options.ConfirmTimeout (30 s by default; confirm_timeout): what is
// unconfirmed then is named in a *bus.PublishError matching
// ErrConfirmTimeout. A message RabbitMQ returns as unroutable fails
// Publish with ErrUnroutable. Consumers
// use manual acknowledgements with the subscription's prefetch as QoS.
//
// A Nack republishes the message with its attempt count: after a delay, it
// goes through a retry queue "<queue>.retry.<ms>ms" whose TTL dead-letters
// it back into the group's queue, so a waiting message never blocks the
// others. Delays are rounded to the nearest of a fixed set of steps (50ms
// to 24h), one retry queue each, because RabbitMQ expires messages only at
// the head of a queue. When the attempts are used up the message goes to
// the dead-letter topic with the error, the attempt count and its origin
// in its headers.
//
// Attempts: omnibus carries the count in a header across retries. A
// redelivery after a consumer died adds one on classic queues (RabbitMQ
// only flags it as redelivered) and the exact count on quorum queues
// (x-delivery-count).
//
// When the connection is lost the Broker reconnects with backoff and
// subscriptions resume consuming, topology included. Publish waits for the
// connection within its context; messages whose confirms were lost with
// the connection are reported unconfirmed in a *bus.PublishError.
//
// # Clusters
//
// The URL may name every node of a cluster,
// amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost (each host with its
// port, or none): New connects to the first that answers, and after a
// lost connection the Broker tries the next node first. On a cluster use
// quorum queues (?queue_type=quorum, Options.QueueType): Raft-replicated
// to every node (three here), a confirm then means a majority of them has
// the message, and they ride through the loss of a minority of nodes.
// Classic queues live on one node and are gone while it is; mirrored
// classic queues lost confirmed messages under partitions and RabbitMQ
// 4.0 removed them.
//
// Credentials come from the URL and never appear in errors or logs.
// Refused credentials fail New with bus.ErrAuth, at once and without
// retrying; a vhost the user may not open (NOT_ALLOWED) fails it with
// bus.ErrForbidden, and so do Publish and Subscribe on an exchange or queue
// the user lacks the configure, write or read permission for
// (ACCESS_REFUSED). amqps:// verifies the server's certificate against the
// system's roots, or Options.TLS, or the cacertfile URL parameter.
package rabbitmq
