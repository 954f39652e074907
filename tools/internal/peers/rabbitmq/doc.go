// Package rabbitmq holds the tests and benchmarks that put the RabbitMQ
// adapter beside its peers: watermill's universal pub/sub suite through the
// bridge, watermill-amqp as an omnibus backend, and benchmarks against
// amqp091-go and watermill-amqp.
package rabbitmq
