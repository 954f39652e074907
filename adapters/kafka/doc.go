// Package kafka is omnibus's Kafka backend, on github.com/twmb/franz-go:
// producing, consumer groups, fetching, commits and admin requests. Open
// it by URL after importing the package,
//
//	b, err := bus.Open(ctx, "kafka://127.0.0.1:9092?partitions=6")
//
// or build a Client with New and Options. See Scheme for the URL's
// parameters.
//
// # Publishing
//
// Publish returns once the partition leaders have the messages from every
// in-sync replica (acks=all; Options.Acks = AcksLeader, acks=leader in
// the URL, answers once the leader alone has them, and loses them when
// that leader is cut off from its followers). One franz-go client per Client writes every
// record: published messages, and the retries and dead letters of Nack.
// A Publish call's records are sent as soon as they are buffered, without
// lingering, in one batch per partition together with whatever concurrent
// calls have buffered for the partition; up to five produce requests per
// broker are in flight at once. A message's Key picks its partition with
// murmur2, as the Java client does; the keyless messages of one call
// share one partition, chosen at random among the writable ones. The ID,
// headers and the publish time in nanoseconds travel as record headers
// (HeaderID, HeaderPublishedAt; a record timestamp has milliseconds
// only). Batches are compressed with snappy unless Options.Compression
// says otherwise, and only when that makes them smaller. Topics are
// created on first use with Options.Partitions partitions. Messages over
// Options.MaxMessageSize are refused with a *bus.SizeError before anything
// is sent; partitions that fail are reported as a *bus.PublishError, and
// when Publish's context ends first every message of the call is reported
// unconfirmed.
//
// The producer is idempotent (franz-go's default, kept): the broker drops
// the duplicates that the producer's own retries would write, and the
// order within a partition holds with several requests in flight. A
// message is written twice only when the application publishes it again
// after an error. The producer keeps retrying a record until it is
// acknowledged, for up to three times Options.WriteTimeout; a Publish
// whose context ends sooner returns then, and its records may still
// arrive. Kafka 3.0 and later allow idempotent writes to any principal
// allowed to write to a topic; with earlier versions the principal needs
// the IDEMPOTENT_WRITE operation on the cluster, or Publish fails with
// bus.ErrForbidden (CLUSTER_AUTHORIZATION_FAILED).
//
// # Consuming
//
// Each Subscribe is a member of a Kafka consumer group, by default
// "<topic>.<group>" (see Options.GroupID). Members of a group share the
// topic's partitions; each group reads every message, and a group new to a
// topic starts at its earliest offset. Records are handed out up to the
// subscription's Prefetch at once, from all its partitions, and may be
// acknowledged in any order: a partition's offset is committed (every
// Options.CommitInterval, on rebalance and on Close) only up to its first
// unsettled record, so concurrency never commits past unprocessed work.
// Within a partition records are handed out in offset order, so a single
// consumer with Prefetch 1, or bus.Consumer with OrderedByKey, sees each
// key in publish order.
//
// # Failures
//
// Nack writes the message to the group's retry topic
// ("<topic>.retry.<group>", see RetryTopic), with its attempt number and
// due time in headers, and lets the partition move on: a failing message
// never blocks its partition. The subscription reads the retry topic too,
// holding each record until it is due. When attempts run out, or Nack asks
// for it, the message goes to SubscribeOptions.DeadLetterTopic with the
// dead-letter headers (see package bus/driver). A retry goes behind later messages of its
// key; Options.BlockingRetry instead retries in place and holds back the
// later messages of the key meanwhile, for work that needs strict order.
// A postponed delivery (bus.NackOptions.Postpone) takes the same way back
// without counting as an attempt. A retry partition is committed, like any
// other, up to its first unsettled record, so after a restart the records
// behind a long delay are read again; those already handled come back as
// duplicates, as at-least-once delivery allows.
//
// Receive returns an error other than bus.ErrClosed only for failures
// that do not pass by themselves (refused credentials or permissions);
// franz-go retries the rest, and they are logged. Nack waits for the
// retry or dead letter to be acknowledged like Publish does; when that
// write fails, the record is not committed and the subscription delivers
// it again after a second.
//
// # Rebalances and shutdown
//
// Each subscription has one franz-go client, a member of its group: it
// joins, heartbeats, fetches every partition it is assigned and commits
// what the subscription tells it to (autocommit is off). The Client's
// publishing client is shared by all its subscriptions. Rebalances are
// cooperative by default (the cooperative-sticky assignor, KIP-429): when
// a member joins or leaves, only the partitions that change owner stop;
// the others are consumed throughout. Options.Rebalance selects eager
// rebalancing (the range assignor) for groups that must interoperate with
// members of eager clients.
//
// When a rebalance takes partitions away, the member stops handing out
// their records, waits up to Options.DrainTimeout for those in flight to
// be settled, commits, and only then lets the rebalance go on; deliveries
// still unsettled then fail with ErrRevoked, and no record of a revoked
// partition reaches a handler afterwards. When the member loses
// partitions without a rebalance (its session expired), their deliveries
// fail with ErrRevoked at once. Commits carry the member's generation, so
// the coordinator refuses a stale one. Close commits what was settled and
// leaves the group: unsettled deliveries are redelivered to the group's
// next owner of their partition. A member that dies without closing holds
// its partitions until Options.SessionTimeout passes. With
// Options.InstanceID the member is static (KIP-345): one that restarts
// within SessionTimeout gets its partitions back without a rebalance.
//
// A subscription polls its client for as many records as its window has
// room for. Records that must wait (retries not yet due, and with
// BlockingRetry records behind an unsettled one of their key) are held
// by the subscription; a partition with Options.RetryLookahead records
// waiting is paused, so that its fetches stop without holding back the
// others.
//
// Kafka counts no deliveries, so the commit metadata records how far each
// partition was handed out; the next owner numbers the redeliveries of
// those records from 2 (bus.Message.Attempt). Records redelivered after a
// crash, past the last commit, start at 1 again.
//
// Topics, retry topics and dead-letter topics created on first use get
// Options.Partitions partitions, Options.ReplicationFactor replicas and
// Options.MinInsyncReplicas. A retry topic with fewer partitions than its
// topic (partitions were added to the topic) gets more when a
// subscription starts.
//
// # Compatibility
//
// The package works with Kafka 2.1 and later, Kafka 4.x included (which
// dropped many old protocol versions): franz-go negotiates every
// request's version with the broker. Cooperative rebalancing needs every
// member of a group to support it; static membership needs Kafka 2.3.
//
// # Security
//
// Options.TLS and Options.SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) apply
// to every connection. Passwords appear in no error and no log line; a
// URL's password is redacted wherever the URL is echoed. SASL takes the
// URL's user and password; tls=true or any TLS parameter turns on TLS,
// verified by default. Refused
// credentials fail New with bus.ErrAuth, without retrying. A topic or group
// the cluster's ACLs do not allow the user (TOPIC_AUTHORIZATION_FAILED,
// GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED) fails Publish
// and Subscribe with bus.ErrForbidden. The user needs, on the topics it
// uses and their retry and dead-letter topics, Describe, Read and Write,
// and Create unless the topics exist; on its groups, Read and Describe;
// before Kafka 3.0, IdempotentWrite on the cluster too.
package kafka
