module github.com/omnibus-mq/omnibus/examples

go 1.26.0

require (
	github.com/omnibus-mq/omnibus v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/kafka v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/rabbitmq v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/redisstream v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/rocketmq v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/handlers v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/internal/redisconn v0.0.0-00010101000000-000000000000
	github.com/redis/go-redis/v9 v9.23.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/rabbitmq/amqp091-go v1.16.0 // indirect
	github.com/twmb/franz-go v1.22.3 // indirect
	github.com/twmb/franz-go/pkg/kadm v1.20.0 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

// The modules of this repository are developed together (go.work) and
// released together, with the same version.
replace (
	github.com/omnibus-mq/omnibus => ..
	github.com/omnibus-mq/omnibus/adapters/kafka => ../adapters/kafka
	github.com/omnibus-mq/omnibus/adapters/rabbitmq => ../adapters/rabbitmq
	github.com/omnibus-mq/omnibus/adapters/redisstream => ../adapters/redisstream
	github.com/omnibus-mq/omnibus/adapters/rocketmq => ../adapters/rocketmq
	github.com/omnibus-mq/omnibus/handlers => ../handlers
	github.com/omnibus-mq/omnibus/internal/redisconn => ../internal/redisconn
)
