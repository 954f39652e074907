package rabbitmq

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Messages written with the publish time's older name decode with it.
func TestPublishTimeOldSpelling(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, name := range []string{"omnibus-published-at", hdrPublished} {
		m := message(&amqp.Delivery{MessageId: "id-1", Headers: amqp.Table{name: int64(1700000000123456789)}})
		if !m.PublishedAt.Equal(at) || m.ID != "id-1" || len(m.Headers) != 0 {
			t.Errorf("%s: decoded %+v, want published at %v and no headers", name, m, at)
		}
	}
}
