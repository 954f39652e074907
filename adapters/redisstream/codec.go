package redisstream

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

// Stream entry fields. Every header travels as its own field behind
// headerPrefix, so no header can collide with the fixed fields, which are
// one letter long to keep entries small.
const (
	fieldID          = "i" // bus.Message.ID
	fieldKey         = "k" // bus.Message.Key, absent when empty
	fieldPublishedAt = "t" // bus.Message.PublishedAt, Unix nanoseconds
	fieldBody        = "b" // bus.Message.Body, absent when empty
	fieldAttempts    = "a" // deliveries made before this entry; retry entries only
	headerPrefix     = "h:"
)

// encode returns the XADD field/value arguments of m. attempts is written
// when positive.
func encode(m *bus.Message, attempts int) []any {
	args := make([]any, 0, 8+2*len(m.Headers)+2)
	args = append(args, fieldID, m.ID)
	if !m.PublishedAt.IsZero() {
		args = append(args, fieldPublishedAt, strconv.FormatInt(m.PublishedAt.UnixNano(), 10))
	}
	if m.Key != "" {
		args = append(args, fieldKey, m.Key)
	}
	if len(m.Body) > 0 {
		args = append(args, fieldBody, m.Body)
	}
	for k, v := range m.Headers {
		args = append(args, headerPrefix+k, v)
	}
	if attempts > 0 {
		args = append(args, fieldAttempts, strconv.Itoa(attempts))
	}
	return args
}

// decode builds the message of a stream entry from its field/value pairs
// and returns it with the attempts recorded in the entry. Entries written
// by other programs are read leniently: without an ID field the entry ID
// serves, and fields outside this layout become headers.
func decode(entryID string, fields []string) (*bus.Message, int) {
	m := &bus.Message{}
	attempts := 0
	for i := 0; i+1 < len(fields); i += 2 {
		f, v := fields[i], fields[i+1]
		switch {
		case f == fieldID:
			m.ID = v
		case f == fieldKey:
			m.Key = v
		case f == fieldBody:
			m.Body = []byte(v)
		case f == fieldPublishedAt:
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				m.PublishedAt = time.Unix(0, ns)
			}
		case f == fieldAttempts:
			// A count from another writer may be negative or huge;
			// capped, attempt numbers stay positive without overflow.
			if n, err := strconv.Atoi(v); err == nil {
				attempts = min(max(n, 0), math.MaxInt32)
			}
		default:
			name := strings.TrimPrefix(f, headerPrefix)
			// Headers Publish would refuse (empty or too long names,
			// names of message fields) come only from other writers.
			if driver.CheckHeader(name) != nil {
				continue
			}
			if m.Headers == nil {
				m.Headers = bus.Headers{}
			}
			m.Headers[name] = v
		}
	}
	if m.ID == "" {
		m.ID = entryID
	}
	if m.Headers == nil {
		m.Headers = bus.Headers{}
	}
	return m, attempts
}
