package chaos

// The backends the scenarios open by URL, in this process and in consumer
// processes.
import (
	_ "github.com/omnibus-mq/omnibus/adapters/kafka"
	_ "github.com/omnibus-mq/omnibus/adapters/rabbitmq"
	_ "github.com/omnibus-mq/omnibus/adapters/redisstream"
	_ "github.com/omnibus-mq/omnibus/adapters/rocketmq"
)
