package kafka_test

import (
	"strconv"
	"testing"

	kgo "github.com/segmentio/kafka-go"

	"github.com/omnibus-mq/omnibus/adapters/kafka"
)

// A key goes to the partition kafka-go's Murmur2Balancer (murmur2, the
// sign bit masked, modulo the partition count, as the Java client)
// picks, so that omnibus and other clients agree where a key lives.
func TestPartitionAgreesWithMurmur2Balancer(t *testing.T) {
	var balancer kgo.Murmur2Balancer
	for n := 1; n <= 12; n++ {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 500 {
			key := "key-" + strconv.Itoa(i)
			if got, want := kafka.Partition(key, n), balancer.Balance(kgo.Message{Key: []byte(key)}, parts...); got != want {
				t.Fatalf("key %q of %d partitions: partition %d, want %d", key, n, got, want)
			}
		}
	}
}
