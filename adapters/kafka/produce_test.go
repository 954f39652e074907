package kafka

import (
	"errors"
	"fmt"
	"testing"

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

// Keyless records of one call share the partition their lane picks; a
// key keeps its partition. (tools/internal/peers/kafka checks the keys'
// partitions against kafka-go's murmur2 balancer.)
func TestPartitionerLanes(t *testing.T) {
	p := partitioner{}.ForTopic("t")
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
	if !p.RequiresConsistency(&franz.Record{Key: []byte("k")}) {
		t.Error("a keyed record may move to another partition")
	}
}
