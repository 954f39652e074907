// Package redisstream holds the tests and benchmarks that put the Redis
// Streams adapter beside its peers: watermill's universal pub/sub suite
// through the bridge, watermill-redisstream as an omnibus backend, and
// benchmarks against go-redis and watermill-redisstream.
package redisstream
