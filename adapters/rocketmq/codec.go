package rocketmq

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Message properties this package writes. A RocketMQ message carries
// string properties; omnibus's fields and headers travel in these.
const (
	// PropID holds bus.Message.ID. The ID also goes in RocketMQ's KEYS
	// property, which the broker indexes (mqadmin queryMsgByKey).
	PropID = wire.ID
	// PropKey holds bus.Message.Key.
	PropKey = wire.Key
	// PropPublishedAt holds bus.Message.PublishedAt in Unix nanoseconds.
	// Messages written before it had this name carry it as
	// "omnibus-published-at", which is read as well.
	PropPublishedAt = wire.Published
	// PropAttempt holds the attempt number of a redelivery copy.
	PropAttempt = wire.Attempt
	// HeaderPrefix starts the property of each header: header "k" is
	// property "h:k".
	HeaderPrefix = "h:"

	propKeys       = "KEYS"
	propTimerMs    = "TIMER_DELIVER_MS"
	propUniqClient = "UNIQ_KEY"
)

// maxPropertiesLen is the broker's limit on a message's encoded
// properties (a signed 16-bit length).
const maxPropertiesLen = 32767

// Message flags of the wire format.
const (
	sysFlagCompressed   = 0x1
	sysFlagBornHostV6   = 0x10
	sysFlagStoreHostV6  = 0x20
	magicV1             = 0xdaa320a7
	magicV2             = 0xdaa320ab
	nameValueSeparator  = 1
	propertiesSeparator = 2
)

// encodeProperties returns m's properties in RocketMQ's text form, with
// the extra properties after them.
func encodeProperties(m *bus.Message, extra ...string) (string, error) {
	var b strings.Builder
	put := func(k, v string) error {
		if strings.ContainsAny(k, "\x01\x02") || strings.ContainsAny(v, "\x01\x02") {
			return fmt.Errorf("%w: header %q: RocketMQ properties cannot hold the bytes 0x01 and 0x02", bus.ErrInvalidMessage, k)
		}
		b.WriteString(k)
		b.WriteByte(nameValueSeparator)
		b.WriteString(v)
		b.WriteByte(propertiesSeparator)
		return nil
	}
	if err := put(PropID, m.ID); err != nil {
		return "", err
	}
	if err := put(propKeys, m.ID); err != nil {
		return "", err
	}
	if m.Key != "" {
		if err := put(PropKey, m.Key); err != nil {
			return "", err
		}
	}
	if err := put(PropPublishedAt, strconv.FormatInt(m.PublishedAt.UnixNano(), 10)); err != nil {
		return "", err
	}
	for k, v := range m.Headers {
		if err := put(HeaderPrefix+k, v); err != nil {
			return "", err
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if err := put(extra[i], extra[i+1]); err != nil {
			return "", err
		}
	}
	if b.Len() > maxPropertiesLen {
		return "", fmt.Errorf("%w: key, ID and headers take %d bytes as RocketMQ properties, over the broker's limit of %d",
			bus.ErrInvalidMessage, b.Len(), maxPropertiesLen)
	}
	return b.String(), nil
}

func decodeProperties(s string) map[string]string {
	props := map[string]string{}
	for _, kv := range strings.Split(s, "\x02") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "\x01")
		props[k] = v
	}
	return props
}

// wireMessage is a message as a pull returns it.
type wireMessage struct {
	queueID        int
	queueOffset    int64
	reconsumeTimes int
	bornAt         time.Time
	storedAt       time.Time
	topic          string
	body           []byte
	props          map[string]string
}

var errMalformed = errors.New("rocketmq: malformed message in a pull response")

// decodeMessages parses the body of a pull response.
func decodeMessages(data []byte) ([]*wireMessage, error) {
	var out []*wireMessage
	for len(data) > 0 {
		if len(data) < 4 {
			return out, errMalformed
		}
		size := int(binary.BigEndian.Uint32(data))
		if size < 4 || size > len(data) {
			return out, errMalformed
		}
		m, err := decodeMessage(data[:size])
		if err != nil {
			return out, err
		}
		out = append(out, m)
		data = data[size:]
	}
	return out, nil
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) next(n int) []byte {
	if r.err || n < 0 || n > len(r.b) {
		r.err = true
		return make([]byte, max(n, 0))
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.next(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.next(8)) }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.next(2)) }

func decodeMessage(b []byte) (*wireMessage, error) {
	r := &reader{b: b}
	m := &wireMessage{}
	r.next(4) // total size
	magic := r.u32()
	r.next(4) // body CRC
	m.queueID = int(int32(r.u32()))
	r.next(4) // flag
	m.queueOffset = int64(r.u64())
	r.next(8) // commit log offset
	sysFlag := r.u32()
	m.bornAt = time.UnixMilli(int64(r.u64()))
	if sysFlag&sysFlagBornHostV6 != 0 {
		r.next(20)
	} else {
		r.next(8)
	}
	m.storedAt = time.UnixMilli(int64(r.u64()))
	if sysFlag&sysFlagStoreHostV6 != 0 {
		r.next(20)
	} else {
		r.next(8)
	}
	m.reconsumeTimes = int(int32(r.u32()))
	r.next(8) // prepared transaction offset
	bodyLen := int(int32(r.u32()))
	body := r.next(bodyLen)
	var topicLen int
	if magic == magicV2 {
		topicLen = int(r.u16())
	} else {
		topicLen = int(r.next(1)[0])
	}
	m.topic = string(r.next(topicLen))
	propLen := int(r.u16())
	props := string(r.next(propLen))
	if r.err {
		return nil, errMalformed
	}
	if sysFlag&sysFlagCompressed != 0 {
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("rocketmq: compressed body: %w", err)
		}
		body, err = io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("rocketmq: compressed body: %w", err)
		}
	} else {
		body = bytes.Clone(body)
	}
	m.body = body
	m.props = decodeProperties(props)
	return m, nil
}

// toBus rebuilds the omnibus message. Messages not written by omnibus
// get RocketMQ's message key as ID, their properties as headers and their
// store time as PublishedAt.
func (w *wireMessage) toBus() *bus.Message {
	m := &bus.Message{Body: w.body, Headers: bus.Headers{}, Attempt: 1}
	id, ours := w.props[PropID]
	for k, v := range w.props {
		if h, ok := strings.CutPrefix(k, HeaderPrefix); ok {
			m.Headers[h] = v
		} else if !ours && k != propUniqClient {
			m.Headers[k] = v
		}
	}
	if ours {
		m.ID = id
		m.Key = w.props[PropKey]
		if t, ok := wire.ParseTime(w.props[PropPublishedAt]); ok {
			m.PublishedAt = t
		} else if t, ok := wire.ParseTime(w.props[wire.PublishedOld]); ok {
			m.PublishedAt = t
		}
		if n, err := strconv.Atoi(w.props[PropAttempt]); err == nil && n > 0 {
			m.Attempt = n
		}
	} else {
		m.ID = w.props[propUniqClient]
		if m.ID == "" {
			m.ID = w.props[propKeys]
		}
		m.PublishedAt = w.bornAt
		m.Attempt = w.reconsumeTimes + 1
	}
	return m
}

// encodeBatchEntry is one message in the body of a batch send.
func encodeBatchEntry(body []byte, props string) []byte {
	size := 4 + 4 + 4 + 4 + 4 + len(body) + 2 + len(props)
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, 0) // magic code
	b = binary.BigEndian.AppendUint32(b, 0) // body CRC
	b = binary.BigEndian.AppendUint32(b, 0) // flag
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(props)))
	b = append(b, props...)
	return b
}

// RocketMQ topic and group names are at most this long.
const (
	maxTopicLen = 127
	maxGroupLen = 120 // leaves room for the "|retry" of the retry topic
)

// Name returns the RocketMQ topic or group name that stands for an omnibus
// name. RocketMQ allows only [a-zA-Z0-9_%|-] in names, so every other
// byte, and '_' itself, becomes '_' and two hex digits ("orders.eu" is
// "orders_2Eeu"); a name longer than limit keeps its beginning and ends
// with a hash of the whole.
func Name(s string, limit int) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	out := b.String()
	if len(out) > limit {
		sum := sha256.Sum256([]byte(s))
		tail := "|" + hex.EncodeToString(sum[:10])
		out = out[:limit-len(tail)] + tail
	}
	return out
}
