// Package rocketmq runs watermill's universal pub/sub suite on the RocketMQ
// adapter through the bridge.
package rocketmq
