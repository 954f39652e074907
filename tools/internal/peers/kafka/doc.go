// Package kafka holds the tests and benchmarks that put the Kafka adapter
// beside its peers: watermill's universal pub/sub suite through the bridge,
// watermill-kafka as an omnibus backend, and benchmarks against kafka-go and
// watermill-kafka.
package kafka
