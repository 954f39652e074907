module github.com/omnibus-mq/omnibus/handlers

go 1.26.0

require (
	github.com/omnibus-mq/omnibus v0.0.0-00010101000000-000000000000
	github.com/omnibus-mq/omnibus/internal/redisconn v0.0.0-00010101000000-000000000000
	github.com/redis/go-redis/v9 v9.23.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

// The modules of this repository are developed together (go.work) and
// released together, with the same version.
replace (
	github.com/omnibus-mq/omnibus => ..
	github.com/omnibus-mq/omnibus/internal/redisconn => ../internal/redisconn
)
