package watermill

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// An Ack or Nack that is ready together with the end of the subscription
// wins: the message must not go back to the broker to be delivered again.
func TestSettledPrefersAckOverEnd(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 200 {
		acked := message.NewMessage("a", nil)
		acked.Ack()
		if a, n := settled(ended, acked); !a || n {
			t.Fatalf("try %d: an acked message at the end: acked %v, nacked %v", i, a, n)
		}
		nacked := message.NewMessage("n", nil)
		nacked.Nack()
		if a, n := settled(ended, nacked); a || !n {
			t.Fatalf("try %d: a nacked message at the end: acked %v, nacked %v", i, a, n)
		}
	}
	if a, n := settled(ended, message.NewMessage("u", nil)); a || n {
		t.Fatalf("an unsettled message at the end: acked %v, nacked %v", a, n)
	}
	live, stop := context.WithCancel(context.Background())
	defer stop()
	m := message.NewMessage("l", nil)
	go m.Ack()
	if a, n := settled(live, m); !a || n {
		t.Fatalf("a message acked while live: acked %v, nacked %v", a, n)
	}
}
