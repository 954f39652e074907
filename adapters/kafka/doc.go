// Package kafka is omnibus's Kafka backend. It produces and fetches with
// github.com/twmb/franz-go, and joins consumer groups and commits their
// offsets with github.com/segmentio/kafka-go. Open it by URL after
// importing the package,
//
//	b, err := bus.Open(ctx, "kafka://127.0.0.1:9092?partitions=6")
//
// or build a Client with New and Options. See Scheme for the URL's
// parameters.
//
// # Publishing
//
// Publish returns once the partition leaders have the messages from every
// in-sync replica (acks=all). One franz-go client per Client writes every
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
// kafka-go and franz-go retry the rest, and they are logged. Nack waits for the
// retry or dead letter to be acknowledged like Publish does.
//
// # Rebalances and shutdown
//
// Group membership is kafka-go's ConsumerGroup, used directly rather than
// through kafka-go's Reader in group mode: a generation lists the
// partitions this member owns, and the member controls when it stops
// reading them, what it commits, and that it commits before it rejoins.
// The Reader's group mode commits the highest offset it is given, so
// acknowledgements out of order would skip unprocessed records, and it
// commits acknowledgements that arrive after a rebalance in the next
// generation, even for partitions another member owns by then (the
// coordinator checks a commit's generation, not who owns the partition);
// nor does a rebalance wait for records in flight. Each partition the
// member owns is read by a franz-go client of its own, outside any group,
// from the group's committed offset (or the earliest offset, also when
// the committed one is gone by retention). When a rebalance
// takes partitions away, the member stops handing out their records,
// waits up to Options.DrainTimeout for those in flight to be settled,
// commits, and only then rejoins; deliveries still unsettled then are
// given back (their Ack and Nack return ErrRevoked). Commits carry the
// member's generation, so the coordinator refuses a stale one. Close does
// the same without waiting: unsettled deliveries are redelivered to the
// group's next owner of their partition. A member that dies without
// closing holds its partitions until Options.SessionTimeout passes.
//
// Kafka counts no deliveries, so the commit metadata records how far each
// partition was handed out; the next owner numbers the redeliveries of
// those records from 2 (bus.Message.Attempt). Records redelivered after a
// crash, past the last commit, start at 1 again.
//
// # Security
//
// Options.TLS and Options.SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) apply
// to every connection. Passwords appear in no error and no log line; a
// URL's password is redacted wherever the URL is echoed.
//
// # Compatibility
//
// The package works with Kafka 2.1 and later, Kafka 4.x included (which
// dropped many old protocol versions). franz-go negotiates every request's
// version with the broker; kafka-go's group protocol uses
// JoinGroup v2, SyncGroup v0, Heartbeat v0, LeaveGroup v0, OffsetFetch v1
// and FindCoordinator v0, all still served by Kafka 4.1; offsets are
// committed and fetched with versions negotiated with the broker, which
// carry the attempt metadata.
//
// # Security
//
// SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) takes the URL's user and
// password; tls=true or tls_ca turns on TLS, verified by default. Refused
// credentials fail New with bus.ErrAuth, without retrying. A topic or group
// the cluster's ACLs do not allow the user (TOPIC_AUTHORIZATION_FAILED,
// GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED) fails Publish
// and Subscribe with bus.ErrForbidden. The user needs, on the topics it
// uses and their retry and dead-letter topics, Describe, Read and Write,
// and Create unless the topics exist; on its groups, Read and Describe;
// before Kafka 3.0, IdempotentWrite on the cluster too.
package kafka
