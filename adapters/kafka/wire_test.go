package kafka

import (
	"testing"
	"time"

	franz "github.com/twmb/franz-go/pkg/kgo"
)

// Records written with the publish time's older name decode with it.
func TestPublishTimeOldSpelling(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, name := range []string{"omnibus-published-at", HeaderPublishedAt} {
		m, _, _ := decode(&franz.Record{Topic: "t", Headers: []franz.RecordHeader{
			{Key: HeaderID, Value: []byte("id-1")}, {Key: name, Value: []byte("1700000000123456789")}}})
		if !m.PublishedAt.Equal(at) || m.ID != "id-1" || len(m.Headers) != 0 {
			t.Errorf("%s: decoded %+v, want published at %v and no headers", name, m, at)
		}
	}
}
