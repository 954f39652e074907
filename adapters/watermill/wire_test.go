package watermill

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Watermill messages with the publish time's older name decode with it.
func TestPublishTimeOldSpelling(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, name := range []string{"omnibus-published-at", MetadataPublishedAt} {
		wm := message.NewMessage("id-1", []byte("b"))
		wm.Metadata[name] = "1700000000123456789"
		if m := fromWatermill(wm, false); !m.PublishedAt.Equal(at) || len(m.Headers) != 0 {
			t.Errorf("%s: decoded %+v, want published at %v and no headers", name, m, at)
		}
	}
}
