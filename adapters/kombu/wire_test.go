package kombu

import (
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// Envelopes written with the publish time's older name decode with it.
func TestPublishTimeOldSpelling(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	raw, err := encode(&bus.Message{ID: "id-1", Body: []byte("b"), PublishedAt: at}, "q", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"omnibus-published-at", propPublished} {
		r, err := decode([]byte(strings.Replace(string(raw), `"`+propPublished+`"`, `"`+name+`"`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if !r.msg.PublishedAt.Equal(at) || r.msg.ID != "id-1" {
			t.Errorf("%s: decoded %+v, want published at %v", name, r.msg, at)
		}
	}
}
