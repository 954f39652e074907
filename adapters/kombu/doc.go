// Package kombu is omnibus's backend for kombu's Redis transport, the one
// Celery uses with broker_url = "redis://...": Go and Celery workers and
// clients share the same queues, and a Go consumer keeps kombu's
// bookkeeping, so it is at least once like a Celery worker. It needs
// Redis 6.2 or newer (BLMOVE) with Lua scripting: one server, or a master
// behind Sentinel (kombu+sentinel://, Celery's sentinel:// transport).
// Not a Redis Cluster: kombu's unacked hash and index are shared by every
// queue, so its scripts cannot keep to one hash slot, and Celery has no
// cluster transport either.
//
// Open it by URL after importing the package, or build a Broker with New:
//
//	b, err := bus.Open(ctx, "kombu+redis://localhost:6379/0")
//	id, err := celery.Delay(ctx, b, "celery", "tasks.send_sms_code", "+15550100", "4711")
//
// kombu+rediss:// connects over TLS; kombu+sentinel://s1:26379,s2:26379/mymaster
// asks the Sentinels for the master and follows their failovers.
// ParseURL lists the query parameters,
// named after kombu's transport options; global_keyprefix and
// visibility_timeout must match the Celery side's.
//
// # Layout
//
// These are kombu's keys, each after the global key prefix:
//
//	<queue>               list of the queue's messages; producers LPUSH,
//	                      consumers pop from the right
//	<queue>\x06\x16<n>    the same for priority step n (3, 6 or 9); kombu
//	                      takes step 0, the plain list, first
//	unacked               hash: delivery tag -> [message, exchange, routing_key]
//	unacked_index         sorted set: delivery tag -> time taken (Unix seconds)
//	unacked_mutex         held by whoever restores timed-out deliveries
//	_kombu.binding.<ex>   set of "routing_key\x06\x16pattern\x06\x16queue"
//
// and one of omnibus's own:
//
//	_omnibus.delayed.<queue>  sorted set of delayed redeliveries (Nack with a Delay)
//
// Each message is kombu's JSON envelope: body (base64, with
// properties.body_encoding "base64"), content-type, content-encoding,
// headers, and properties with delivery_tag (a fresh UUID),
// delivery_info {exchange, routing_key}, priority, delivery_mode and
// correlation_id. Publish sends, as Celery does for a queue named in
// apply_async, through the anonymous exchange with the queue name as
// routing key, one LPUSH per call, priority 0. bus headers are carried
// in headers; those listed in the omnibus-typed-headers header (the
// celery package's typed Celery headers) as JSON values, the others as
// strings. omnibus adds its own properties, which Celery ignores:
// omnibus-id, omnibus-key, omnibus-published-ns and omnibus-attempt.
// A message from Celery has none: its ID is then the task id.
//
// # Delivery
//
// A subscription takes messages with a Lua script that pops them from the
// queue's lists in kombu's order and, in the same atomic step, records
// each in unacked and unacked_index exactly as kombu's QoS does, so no
// crash can lose a message between the two (kombu itself pops with BRPOP
// and records afterwards). It takes up to SubscribeOptions.Prefetch at
// once. When the queue is empty it waits with BLMOVE from the plain
// list's tail to its own tail, which changes nothing but returns when a
// message arrives; the priority lists and due delayed redeliveries are
// looked at every PollInterval.
//
// Ack removes the delivery from unacked and unacked_index. Nack does so
// atomically with, according to NackOptions: a push of the message back
// to the left end of its list (behind the others, as kombu's reject with
// requeue does); an entry in the delayed set, moved to the right end of
// the list when due by any omnibus subscription of that queue; or a
// dead-letter copy (see package bus/driver) pushed to the dead-letter queue. A redelivered
// message carries delivery_info.redelivered, as kombu marks it, and
// omnibus-attempt, so Message.Attempt grows with each delivery.
// Message.Attempt counts deliveries omnibus made and redeliveries it
// restored; a message kombu restored counts as attempt 2 at least.
// A queue entry that is not an envelope goes to the dead-letter queue
// with ErrMalformed.
//
// # Crashes, restores and Close
//
// A live subscription renews what it holds (its time in unacked_index)
// every third of Options.VisibilityTimeout, so a long handler is not taken
// for a dead one. Every RestoreInterval a Broker with subscriptions does
// what kombu's restore_visible does: under unacked_mutex, it puts back
// the deliveries whose time is older than the visibility timeout, at the
// right end of their queue, to be taken next. So a message whose
// consumer died (a killed Go process, or a Celery worker) runs again,
// whichever of Go or Celery restores it: Celery workers restore what Go
// consumers took, and the other way round. Routing back follows the
// stored exchange and routing key: the anonymous exchange routes to the
// queue named by the routing key, another exchange through its kombu
// binding table, matching the routing key as Celery's direct exchanges
// do, or else to the queue named by the routing key.
//
// Close puts every delivery the subscription still holds back at the
// right end of its queue at once, as a Celery worker does at shutdown.
//
// # Limits
//
// A kombu queue is one list that every consumer pops, so subscriptions
// compete whatever their SubscribeOptions.Group: groups do not fan out.
// Delayed redeliveries move only while an omnibus subscription of the
// queue runs; Celery workers do not look at them. Publish sets no
// priority and no fanout exchange is supported. The visibility timeout
// is shared with Celery workers, which do not renew: a shorter one here
// than the longest Celery task makes such a task run twice.
package kombu
