package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	kgo "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	franz "github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/bus"
)

// The producer's refusals are classified like the rest of the client's.
func TestClassifyProducerErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{kerr.SaslAuthenticationFailed, bus.ErrAuth},
		{kerr.UnsupportedSaslMechanism, bus.ErrAuth},
		{kerr.IllegalSaslState, bus.ErrAuth},
		{kerr.TopicAuthorizationFailed, bus.ErrForbidden},
		{kerr.ClusterAuthorizationFailed, bus.ErrForbidden},
		{kerr.GroupAuthorizationFailed, bus.ErrForbidden},
		{kerr.TransactionalIDAuthorizationFailed, bus.ErrForbidden},
	} {
		err := classify(&bus.PublishError{Unconfirmed: []int{0}, Err: fmt.Errorf("kafka: produce: %w", tc.err)})
		if !errors.Is(err, tc.want) || !errors.Is(err, tc.err) {
			t.Errorf("classify(%v) = %v, want it to match %v", tc.err, err, tc.want)
		}
	}
	if err := classify(kerr.MessageTooLarge); errors.Is(err, bus.ErrAuth) || errors.Is(err, bus.ErrForbidden) {
		t.Errorf("classify(MessageTooLarge) = %v", err)
	}
}

// A key picks the partition it had before, with kafka-go's Murmur2Balancer
// (murmur2, the sign bit masked, modulo the partition count, as the Java
// client); keyless records of one call share the partition their lane
// picks.
func TestPartitioner(t *testing.T) {
	p := partitioner{}.ForTopic("t")
	var before kgo.Murmur2Balancer
	for n := 1; n <= 12; n++ {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 500 {
			key := []byte("key-" + strconv.Itoa(i))
			if i == 0 {
				key = []byte{}
			}
			r := &franz.Record{Key: key}
			if got, want := p.Partition(r, n), before.Balance(kgo.Message{Key: key}, parts...); got != want {
				t.Fatalf("key %q of %d partitions: partition %d, want %d", key, n, got, want)
			}
			if !p.RequiresConsistency(r) {
				t.Fatalf("key %q may move to another partition", key)
			}
		}
	}
	lane := int32(1<<31 - 1)
	for n := 1; n <= 7; n++ {
		first := p.Partition(&franz.Record{Partition: lane}, n)
		for range 10 {
			if got := p.Partition(&franz.Record{Partition: lane}, n); got != first || got < 0 || got >= n {
				t.Fatalf("%d partitions: keyless records of one lane on %d and %d", n, first, got)
			}
		}
	}
	if p.RequiresConsistency(&franz.Record{}) {
		t.Error("a keyless record must go to a writable partition")
	}
}
