// Package rocketmq is omnibus's Apache RocketMQ backend. It speaks
// RocketMQ's remoting protocol (TCP, JSON headers) to the name servers and
// brokers itself, with no client library, and needs RocketMQ 5 (timer
// messages, timerWheelEnable=true, the broker's default) for delayed
// redelivery; publishing and consuming work with 4.x brokers too. Open it
// by URL after importing the package, or build a Broker with New:
//
//	b, err := bus.Open(ctx, "rocketmq://127.0.0.1:9876?queues=8")
//	b, err := rocketmq.New(ctx, rocketmq.Options{NameServers: []string{"127.0.0.1:9876"}})
//
// The URL names name servers; see Scheme for its parameters.
// rocketmqs:// connects over TLS, and the URL's user and password are the
// ACL's access key and secret key:
//
//	b, err := bus.Open(ctx, "rocketmqs://AK:SK@ns.example:9876?tls_ca=/etc/ca.pem")
//
// # Why no client library
//
// The two official Go clients were weighed. github.com/apache/
// rocketmq-clients/golang/v5 needs the RocketMQ proxy (a further process,
// gRPC) and starts, for every client, background goroutines that sleep up
// to a minute before they look at their stop signal. The remoting client
// github.com/apache/rocketmq-client-go/v2 needs no proxy, but its push
// consumer starts a goroutine that sleeps its consume timeout (15 minutes)
// before it can stop, holds its long-polling pulls on a context it cannot
// cancel (up to 30 seconds after Shutdown), and the broker's clients it
// shares per process start goroutines that sleep 10 seconds. So each
// closed subscription would leave goroutines behind (the conformance suite
// checks with goleak), and its callback-style consumer settles a message
// only by returning from the callback. The protocol this package needs is
// small: routes and cluster info from the name servers; send and batch
// send, heartbeat, consumer list, queue lock and unlock, pull, consume
// offsets, topic creation, from the brokers.
//
// # Names
//
// RocketMQ allows only [a-zA-Z0-9_%|-] in topic and group names, so an
// omnibus name is encoded (see Name): '.' and every other byte, '_'
// included, become '_' and two hex digits ("orders.eu" is topic
// "orders_2Eeu"). An omnibus group G on topic T is the RocketMQ consumer
// group "<G>__<T>", encoded: RocketMQ wants every member of a group to
// subscribe to the same topics, and omnibus lets one group name serve many
// topics. Topics are created on first use, on every broker, with
// Options.Queues queues (unless Options.NoTopicCreation).
//
// # Publishing
//
// Publish returns once the broker has answered the send: with the broker
// in SYNC_FLUSH mode (as scripts/brokers runs it) that is after the
// message is on disk; a "flush timeout" answer is an error. A message's
// Key picks its queue as the Java client's SelectMessageQueueByHash does
// (the key's Java String.hashCode, modulo the topic's writable queues in
// the order of the route), so that Go and Java producers of one key write
// to one queue and keep one order; the keyless messages of one call
// share one queue, taken in turn from call to call. The messages of one
// queue go in batches of up to 256 messages or 1 MiB (SEND_BATCH_MESSAGE).
// The ID, key, publish time (nanoseconds) and headers travel as message
// properties (PropID, PropKey, PropPublishedAt, HeaderPrefix+name); the ID
// is also the message's KEYS, which the broker indexes. Headers cannot
// hold the bytes 0x01 and 0x02 (RocketMQ's property separators), and the
// properties of a message are limited to 32767 bytes. Bodies are sent
// as they are unless Options.Compression names zlib, lz4 or zstd: then a
// body of at least Options.CompressOver bytes (4 KiB, the Java client's
// threshold, by default) goes compressed when that makes it shorter, with
// the compressed bit and the type in its system flag, as RocketMQ 5's
// clients mark it (clients before 5 read every compressed body as zlib,
// so they need zlib). Options.MaxMessageSize is checked before anything
// is sent, on the uncompressed message; when some batches of a call are
// stored and others not, the error is a *bus.PublishError.
//
// # Clusters
//
// A cluster of several broker groups (a master, broker id 0, and its
// slaves each) is used whole: topics are created on every master and its
// slaves (a slave copies its master's topics only every few seconds and
// refuses pulls of a topic it does not know), sends go to masters only,
// and a group whose master the name servers no longer list is pulled from
// its lowest slave (which needs slaveReadEnable=true), with queue locks,
// consume offsets and heartbeats there too. A send whose broker cannot be
// reached (a refused or broken connection, a write past RequestTimeout,
// no answer within SendTimeout: a master cut off from the network without
// a closed connection, which the name servers keep routing to for up to
// two minutes) goes once more on a fresh route without that broker: a
// keyless message to a queue of another group, a keyed one to the queue
// its key picks among the queues left. For 10 seconds later sends pass
// over that broker, and over a master that answered that it could not
// confirm a send durable (a SYNC_MASTER cut off from its slave), keyed
// ones included: per-key order holds within each broker group, not
// across such a move. A send the broker answered is not sent again within
// the call; the caller's retry goes elsewhere. Routes are asked for again
// every 30 seconds, so a group that comes back gets its share of sends.
// Offsets stored on a slave while its master was down stay there: when
// the master is back, the group resumes from the master's older offsets,
// and what was consumed meanwhile comes again (at least once). Whether a
// send waits for a slave is the broker's configuration: with RocketMQ 5,
// brokerRole=SYNC_MASTER waits only when inSyncReplicas is 2 or more (the
// master counts); `omnibus doctor` shows what it finds.
//
// # Consuming
//
// Each Subscribe is a member of the group (clustering mode). Members
// share the topic's queues as RocketMQ's AllocateMessageQueueAveragely
// does, re-dividing them every Options.RebalanceInterval and when a
// broker says the members changed. A member pulls a queue only while it
// holds the broker's lock of that queue for the group (LOCK_BATCH_MQ, as
// RocketMQ's orderly consumers do), so two members never read one queue
// at once, even while the queues are being re-divided; a member that
// loses a queue waits up to Options.DrainTimeout for the deliveries it
// holds from it to be settled, stores its offset and unlocks it. Pulls
// long-poll (Options.PollTimeout) and are cancelled at once when the
// subscription closes. A group new to a topic reads it from its first
// message (CONSUME_FROM_FIRST_OFFSET).
//
// A compressed body is inflated, whatever its producer: zlib (also when
// the system flag has no type, as clients before RocketMQ 5 write it),
// the LZ4 frame format and zstd. A body that would inflate past
// Options.MaxInflatedSize (64 MiB by default), or that does not decode,
// is delivered as stored, with the reason in the header HeaderBodyError
// (and logged with the message's queue and offset): it is handled or
// dead-lettered like any other message (a task that does not decode is
// dead-lettered), never skipped.
//
// Deliveries are handed out in queue order, at most Prefetch unsettled at
// once, and may be settled in any order: a queue's consume offset, stored
// on the broker every Options.CommitInterval, on rebalance and on Close,
// never passes its first unsettled message. So a single subscriber with
// Prefetch 1, or bus.Consumer with OrderedByKey, sees each key in publish
// order. After a crash, what was delivered past the last stored offset
// comes again, with the attempt number it had.
//
// # Failures, retries and dead letters
//
// RocketMQ's own retry (the consumer's send-back to "%RETRY%<group>",
// delay levels, "%DLQ%<group>" after 16 tries) is not used: the broker
// sends a retry of a group that holds queue locks straight to its DLQ,
// delay levels cannot express NackOptions.Delay, and a postponed delivery
// must not count as an attempt. Instead, Nack stores a copy of the message
// in the group's retry topic, "<G>__<T>|retry" (encoded), with the next
// attempt number in PropAttempt, as a timer message due after
// NackOptions.Delay (TIMER_DELIVER_MS; the broker's timer precision is
// timerPrecisionMs), then settles the delivery. The members read the retry
// topic too, so a retry goes behind later messages of its key. A
// postponed delivery (NackOptions.Postpone) takes the same way with the
// same attempt number. When the attempts of SubscribeOptions.MaxAttempts
// are used up, or NackOptions.DeadLetter asks for it, the message goes to
// SubscribeOptions.DeadLetterTopic ("<topic>.dlq" by default, an ordinary
// topic) with the dead-letter headers (see package bus/driver). Close gives the deliveries
// in hand back the same way as a Nack without delay (counted as an
// attempt), so the group's next member gets them at once.
//
// # TLS and ACL
//
// With Options.TLS (rocketmqs://, tls=true or any TLS parameter of
// driver.Params) every connection, to the name servers and to the
// brokers, is TLS, and the handshake is part of the dial, bounded by
// Options.DialTimeout. The server's certificate is verified against the
// system's roots, or Options.TLS.RootCAs (tls_ca), for the host of the
// address dialled: the name servers' as the URL gives them, the brokers'
// as the name servers list them (their brokerIP1), so their certificates
// must name those addresses, unless tls_server_name names the one name
// all certificates carry. A failed handshake fails New with
// bus.ErrUnreachable and an error that names the certificate problem.
// RocketMQ's name server and broker take TLS with tls.server.mode=enforcing
// (or permissive, which takes both) and tls.test.mode.enable=false; the
// broker connects to the name servers with tls.enable=true.
//
// With Options.AccessKey and Options.SecretKey every request carries the
// ext fields AccessKey, Signature (and SecurityToken with
// Options.SecurityToken), as the Java client's AclClientRPCHook adds
// them: Signature is the base64 HMAC-SHA1, under the secret key, of the
// values of the other ext fields in the order of their names, followed by
// the body. Brokers with ACL 1.0 (RocketMQ 4.4 to 5.3.2, aclEnable=true)
// and ACL 2.0 (5.3 and later, authenticationEnabled=true, the user's name
// and password as the keys) check the same signature. Name servers take
// no credentials, so New asks a master broker for its runtime information
// with them: credentials it refuses (an unknown user, a bad signature)
// fail New with an error that matches bus.ErrAuth. Without credentials,
// against a broker that wants them, the first Publish or Subscribe fails
// with a *ResponseError matching bus.ErrAuth, without retrying; an
// operation the ACL's authorization refuses (authorizationEnabled)
// matches bus.ErrForbidden. The secret key never leaves the process; it shows in
// no error, and Options print it as "xxxxx". A URL with credentials must
// say whether it uses TLS (see Scheme): the signature covers no time or
// nonce, so a request captured on a plain connection can be sent again.
//
// # Limits
//
// Client certificates are sent when Options.TLS has them (tls_cert,
// tls_key), but RocketMQ's ACL does not map them to users. Message
// tags and SQL filters, transactions, broadcasting consumption and
// RocketMQ 5's POP consumption are not used.
package rocketmq
