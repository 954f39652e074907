// Package redisstream is omnibus's Redis Streams backend, built on
// github.com/redis/go-redis/v9. It needs Redis 6.2 or newer with Lua
// scripting: a standalone server, a Redis Cluster, or a master watched by
// Sentinel (see Clusters and Sentinel below). A Redis ACL user needs the @stream,
// @sortedset and @scripting categories and PING, INFO and TIME, and SELECT
// for a database other than 0; CONFIG GET is optional (without it
// Features reports no persistence). Its key patterns must cover the topics'
// streams, their dead-letter streams and omnibus:*. Refused credentials
// fail New with bus.ErrAuth, without retrying; a command or key outside the
// user's ACL (NOPERM) fails Publish and Subscribe with bus.ErrForbidden.
//
// Open it by URL after importing the package, or build a Broker with New:
//
//	b, err := bus.Open(ctx, "redis://user:secret@localhost:6379/0?visibility_timeout=1m")
//	b, err := redisstream.New(ctx, redisstream.Options{Addr: "localhost:6379"})
//
// rediss:// connects over TLS. ParseURL lists the query parameters.
//
// # Clusters and Sentinel
//
// redis+cluster:// (Options.Cluster) names seed nodes of a Redis Cluster;
// redis+sentinel:// (Options.MasterName) names Sentinels and the master
// they watch:
//
//	b, err := bus.Open(ctx, "redis+cluster://10.0.0.1:6379,10.0.0.2:6379/?wait=1")
//	b, err := bus.Open(ctx, "redis+sentinel://:secret@10.0.1.1:26379,10.0.1.2:26379/mymaster")
//
// Behind Sentinel the client asks the Sentinels for the master and
// follows their failover announcements, so a new master is used within
// seconds of its promotion. A cluster client reloads the slot map every
// two seconds while in use (go-redis's default is a minute) and at once
// after a MOVED redirect.
//
// On a cluster every key a Lua script touches must be in one hash slot. A
// topic's stream is its name; the group's retry stream and delayed set
// carry the topic's hash tag ({orders} for the topic orders, or for
// {orders}.eu), so they share its slot, and every script of a group runs
// on one node. A topic whose hashed part holds a "}" cannot be tagged so
// and Subscribe refuses it with bus.ErrInvalidMessage. A dead-letter
// stream in the topic's slot is written in the same script as the ack;
// name topics with a hash tag to have that ("{orders}" dead-letters to
// "{orders}.dlq"). Otherwise the copy is appended first and the ack
// follows: a failure between them delivers the message again, so the
// dead-letter stream can hold a copy twice, never none. A cluster client
// sends a command once more when the connection broke before its reply
// (go-redis does so whatever the retry settings), so a Publish cut off by
// a failure can append a message twice; consumers see duplicates, as
// they may after any failure.
//
// Redis replicates asynchronously: a master that dies can take with it
// the writes it had acknowledged. Options.WaitReplicas (wait=N) makes
// Publish send WAIT N after its XADDs and fail with ErrNotReplicated
// unless N replicas had them within Options.WaitTimeout; with
// appendfsync everysec on the replicas too, that is the strongest
// acknowledgement Redis gives. It still is not consensus: a failover can
// promote a replica that missed a write, and Redis's own documentation
// admits such windows. Acks, retries and dead letters are scripts, which
// Redis replicates as their effects in order; they are not waited for,
// and one lost in a failover delivers its message again.
//
// # Layout
//
// A topic is the stream of the same name; anything that reads Redis
// streams can read it. Each message is one entry with these fields:
//
//	i      message ID
//	t      PublishedAt, Unix nanoseconds in decimal
//	k      key (absent when empty)
//	b      body (absent when empty)
//	h:NAME one field per header NAME
//	a      deliveries made before this entry (retry entries only)
//
// Publish appends with XADD, one pipeline per call, and returns when Redis
// has replied to every XADD. Messages up to Options.MaxMessageSize
// (default 1 MiB) are accepted. With Redis's appendonly yes and appendfsync
// everysec, a crash of the machine can lose about the last second of
// accepted messages; Broker.Features reports Persistent accordingly.
//
// A consumer group is a Redis consumer group on the stream, created by the
// first Subscribe at the stream's start ("0"): messages published before
// any worker of the group ran wait for it. Each group also has two keys of
// its own, for its retries:
//
//	omnibus:retry:<len(topic)>:<topic>:<group>    stream of retries
//	omnibus:delayed:<len(topic)>:<topic>:<group>  sorted set of delayed retries
//
// and on a cluster omnibus:retry:{<tag>}:<len(topic)>:<topic>:<group> and
// omnibus:delayed:{<tag>}:..., where <tag> is the part of the topic's name
// that Redis hashes.
//
// # Delivery
//
// Each subscription is a consumer of its group with a connection of its
// own. It keeps up to SubscribeOptions.Prefetch entries in its pending list
// (fetched ahead of Receive or handed out and unsettled). A fetch is one
// round trip: a Lua script that moves due retries, claims abandoned
// entries and reads the retry stream, then the topic stream, with
// XREADGROUP COUNT n, never taking more than the window has room for;
// for batches over 16 entries the script gets a quarter of the room and
// a plain XREADGROUP in the same pipeline reads the rest of the topic
// stream, since entries that pass through Lua cost Redis a copy each way.
// Under load the subscription waits until half its window is free before
// fetching, so that batches stay large. With nothing to take it blocks on
// XREAD until either stream gains an entry.
//
// Acks are XACKs sent by one goroutine per subscription: Acks made while
// a batch is on the wire go together in the next pipeline, so a busy
// subscription pays one round trip per batch and an idle one adds no
// delay. Ack returns when Redis has replied to its XACK.
//
// A Nack acks the entry and, atomically in a Lua script, either appends the
// dead-letter copy (see package bus/driver) to the dead-letter stream, or adds a retry entry
// carrying the attempts so far ("a"): into the group's retry stream at
// once, or into the group's delayed set when NackOptions.Delay is set,
// whence it moves into the retry stream when due. Retries therefore
// concern the failing group alone, and a delayed message holds back
// nothing else. Message.Attempt is the entry's "a" plus the delivery
// count of its pending entry, so it is 1 on the first delivery and grows
// with every redelivery, whether after a Nack, a claim or a Close.
//
// # Crashes and Close
//
// A subscription renews the entries it holds every third of
// Options.VisibilityTimeout (XCLAIM JUSTID), and every
// Options.ClaimInterval claims (XAUTOCLAIM) entries of its group idle past
// the visibility timeout: those of consumers that died. So a killed
// consumer loses nothing, and a long handler is not mistaken for a dead
// one. An entry claimed after MaxAttempts deliveries that none settled
// goes to the dead-letter stream instead of being delivered again.
//
// Close hands the entries the subscription still holds to a parking
// consumer of the group with an idle time past any visibility timeout, so
// that the group's next claim, at most a ClaimInterval later, delivers
// them again; it then deletes its consumer from the group. Consumers of
// dead processes are deleted by the live ones once they hold nothing and
// have been idle for four visibility timeouts.
//
// The Broker never resends a command by itself after a network error, so
// nothing is appended twice behind the caller's back: Publish reports the
// XADDs whose replies it did not read, and the subscription loop retries
// its own work.
//
// # Trimming
//
// Nothing is trimmed by default, so streams grow until trimmed. Broker.Trim
// (periodically with Options.TrimInterval) deletes only entries that every
// group of the stream has acknowledged. Retry entries are deleted when
// acknowledged.
package redisstream
