module github.com/omnibus-mq/omnibus/adapters/rocketmq

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3
	github.com/omnibus-mq/omnibus v0.0.0-00010101000000-000000000000
	github.com/pierrec/lz4/v4 v4.1.33
)

require github.com/google/uuid v1.6.0 // indirect

// The modules of this repository are developed together (go.work) and
// released together, with the same version.
replace github.com/omnibus-mq/omnibus => ../..
