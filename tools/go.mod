module github.com/omnibus-mq/omnibus/tools

go 1.26.0

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/IBM/sarama v1.43.3
	github.com/ThreeDotsLabs/watermill v1.5.1
	github.com/ThreeDotsLabs/watermill-amqp/v3 v3.0.2
	github.com/ThreeDotsLabs/watermill-kafka/v3 v3.0.6
	github.com/ThreeDotsLabs/watermill-redisstream v1.4.5
	github.com/apache/rocketmq-client-go/v2 v2.1.3-0.20251226070945-2173d070fd1b
	github.com/omnibus-mq/omnibus v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/kafka v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/kombu v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/rabbitmq v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/redisstream v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/rocketmq v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/adapters/watermill v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/celery/redisresult v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/handlers v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/internal/redisconn v0.0.0-00010101000000-000000000000
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/segmentio/kafka-go v0.4.51
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kadm v1.20.0
)

require (
	github.com/Rican7/retry v0.3.1 // indirect
	github.com/cenkalti/backoff/v3 v3.2.2 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/dnwe/otelsarama v0.0.0-20240308230250-9388d9d40bc0 // indirect
	github.com/eapache/go-resiliency v1.7.0 // indirect
	github.com/eapache/go-xerial-snappy v0.0.0-20230731223053-c322873962e3 // indirect
	github.com/eapache/queue v1.1.0 // indirect
	github.com/emirpasic/gods v1.12.0 // indirect
	github.com/go-logr/logr v1.4.2 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/golang/mock v1.3.1 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/golang/snappy v0.0.4 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/hashicorp/errwrap v1.1.0 // indirect
	github.com/hashicorp/go-multierror v1.1.1 // indirect
	github.com/hashicorp/go-uuid v1.0.3 // indirect
	github.com/jcmturner/aescts/v2 v2.0.0 // indirect
	github.com/jcmturner/dnsutils/v2 v2.0.0 // indirect
	github.com/jcmturner/gofork v1.7.6 // indirect
	github.com/jcmturner/gokrb5/v8 v8.4.4 // indirect
	github.com/jcmturner/rpc/v2 v2.0.3 // indirect
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/konsorten/go-windows-terminal-sequences v1.0.1 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/modern-go/concurrent v0.0.0-20180228061459-e0a39a4cb421 // indirect
	github.com/modern-go/reflect2 v1.0.2 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/patrickmn/go-cache v2.1.0+incompatible // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/rcrowley/go-metrics v0.0.0-20250401214520-65e299d6c5c9 // indirect
	github.com/sirupsen/logrus v1.4.0 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/tidwall/gjson v1.13.0 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	github.com/vmihailenco/msgpack v4.0.4+incompatible // indirect
	go.opentelemetry.io/otel v1.29.0 // indirect
	go.opentelemetry.io/otel/metric v1.29.0 // indirect
	go.opentelemetry.io/otel/trace v1.29.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/term v0.46.0 // indirect
	google.golang.org/appengine v1.6.8 // indirect
	google.golang.org/protobuf v1.36.8 // indirect
	gopkg.in/natefinch/lumberjack.v2 v2.0.0 // indirect
	stathat.com/c/consistent v1.0.0 // indirect
)

// The modules of this repository are developed together (go.work) and
// released together, with the same version.
replace (
	github.com/omnibus-mq/omnibus => ..
	github.com/omnibus-mq/omnibus/adapters/kafka => ../adapters/kafka
	github.com/omnibus-mq/omnibus/adapters/kombu => ../adapters/kombu
	github.com/omnibus-mq/omnibus/adapters/rabbitmq => ../adapters/rabbitmq
	github.com/omnibus-mq/omnibus/adapters/redisstream => ../adapters/redisstream
	github.com/omnibus-mq/omnibus/adapters/rocketmq => ../adapters/rocketmq
	github.com/omnibus-mq/omnibus/adapters/watermill => ../adapters/watermill
	github.com/omnibus-mq/omnibus/celery/redisresult => ../celery/redisresult
	github.com/omnibus-mq/omnibus/handlers => ../handlers
	github.com/omnibus-mq/omnibus/internal/redisconn => ../internal/redisconn
	github.com/omnibus-mq/omnibus/task/redisstore => ../task/redisstore
)
