package rocketmq

import (
	"testing"
	"time"
)

// A message stored before the publish time had its common name still
// decodes with its publish time; new messages carry the common name.
func TestPublishTimeOldSpelling(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, name := range []string{"omnibus-published-at", PropPublishedAt} {
		w := &wireMessage{body: []byte("b"), props: map[string]string{PropID: "id-1", name: "1700000000123456789"}}
		if m := w.toBus(); !m.PublishedAt.Equal(at) || m.ID != "id-1" {
			t.Errorf("%s: decoded %+v, want published at %v", name, m, at)
		}
	}
	if PropPublishedAt != "omnibus-published-ns" {
		t.Fatalf("PropPublishedAt = %q, want the name every backend writes", PropPublishedAt)
	}
}
