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
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

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
	// HeaderBodyError is the header of a pulled message whose body could
	// not be decoded (an unknown compression type, a corrupt stream, a
	// body inflating past Options.MaxInflatedSize): it holds the reason,
	// and the body is the one stored, undecoded. The message is delivered
	// all the same, so that it is handled or dead-lettered, not lost.
	HeaderBodyError = "rocketmq-body-error"

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

// The system flag of a compressed body (sysFlagCompressed) says, since
// RocketMQ 5, how it is compressed: the type is bits 8-10. Clients before
// RocketMQ 5 knew only zlib and leave the type 0.
const (
	sysFlagCompressionShift = 8
	sysFlagCompressionMask  = 0x7 << sysFlagCompressionShift

	compressionTypeUnmarked = 0
	compressionTypeLZ4      = 1
	compressionTypeZstd     = 2
	compressionTypeZlib     = 3
)

// Compression is a compression of message bodies, as RocketMQ marks it in
// a message's system flag.
type Compression int

// The compressions. Every one of them is decoded on receipt, whatever
// Options.Compression says.
const (
	// CompressionNone leaves bodies as they are.
	CompressionNone Compression = iota
	// CompressionZlib is zlib (RFC 1950), the Java client's default and
	// the only compression of RocketMQ clients before 5.
	CompressionZlib
	// CompressionLZ4 is the LZ4 frame format.
	CompressionLZ4
	// CompressionZstd is Zstandard (RFC 8878).
	CompressionZstd
)

var compressionNames = [...]string{CompressionNone: "none", CompressionZlib: "zlib", CompressionLZ4: "lz4", CompressionZstd: "zstd"}

// String returns the name ParseCompression takes.
func (c Compression) String() string {
	if c >= 0 && int(c) < len(compressionNames) {
		return compressionNames[c]
	}
	return "Compression(" + strconv.Itoa(int(c)) + ")"
}

// ParseCompression returns the Compression of a name: "none", "zlib",
// "lz4" or "zstd", in any case.
func ParseCompression(s string) (Compression, error) {
	for c, name := range compressionNames {
		if strings.EqualFold(s, name) {
			return Compression(c), nil
		}
	}
	return CompressionNone, fmt.Errorf("rocketmq: unknown compression %q: want none, zlib, lz4 or zstd", s)
}

// sysFlag returns the system flag bits of a body compressed with c.
func (c Compression) sysFlag() int32 {
	var typ int32
	switch c {
	case CompressionZlib:
		typ = compressionTypeZlib
	case CompressionLZ4:
		typ = compressionTypeLZ4
	case CompressionZstd:
		typ = compressionTypeZstd
	default:
		return 0
	}
	return sysFlagCompressed | typ<<sysFlagCompressionShift
}

// compressionOf returns the compression a system flag marks.
func compressionOf(sysFlag uint32) (Compression, error) {
	if sysFlag&sysFlagCompressed == 0 {
		return CompressionNone, nil
	}
	switch typ := (sysFlag & sysFlagCompressionMask) >> sysFlagCompressionShift; typ {
	case compressionTypeUnmarked, compressionTypeZlib:
		return CompressionZlib, nil
	case compressionTypeLZ4:
		return CompressionLZ4, nil
	case compressionTypeZstd:
		return CompressionZstd, nil
	default:
		return CompressionNone, fmt.Errorf("unknown compression type %d (system flag %#x)", typ, sysFlag)
	}
}

var zlibWriters = sync.Pool{New: func() any {
	w, _ := zlib.NewWriterLevel(nil, zlib.DefaultCompression)
	return w
}}

// zstdEncoder is shared: EncodeAll may be called concurrently.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
})

// compressBody returns body compressed with c, and the bits to set in the
// system flag of its send (the sysFlag of SEND_MESSAGE's or
// SEND_BATCH_MESSAGE's header): sysFlagCompressed and the compression
// type. A body shorter than over, one that compression does not make
// shorter, and any body with CompressionNone come back as they are, with
// no bits to set. A batch's system flag applies to every message in it,
// so the bodies of one batch must share their bits.
func compressBody(body []byte, c Compression, over int) ([]byte, int32, error) {
	if c == CompressionNone || len(body) < over {
		return body, 0, nil
	}
	var out []byte
	switch c {
	case CompressionZlib:
		var buf bytes.Buffer
		w := zlibWriters.Get().(*zlib.Writer)
		w.Reset(&buf)
		_, err := w.Write(body)
		if err == nil {
			err = w.Close()
		}
		zlibWriters.Put(w)
		if err != nil {
			return nil, 0, fmt.Errorf("rocketmq: zlib: %w", err)
		}
		out = buf.Bytes()
	case CompressionLZ4:
		var buf bytes.Buffer
		w := lz4.NewWriter(&buf)
		size := lz4.Block4Mb
		for _, s := range []lz4.BlockSize{lz4.Block64Kb, lz4.Block256Kb, lz4.Block1Mb} {
			if len(body) <= int(s) {
				size = s
				break
			}
		}
		err := w.Apply(lz4.BlockSizeOption(size))
		if err == nil {
			_, err = w.Write(body)
		}
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			return nil, 0, fmt.Errorf("rocketmq: lz4: %w", err)
		}
		out = buf.Bytes()
	case CompressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, 0, fmt.Errorf("rocketmq: zstd: %w", err)
		}
		out = enc.EncodeAll(body, nil)
	default:
		return nil, 0, fmt.Errorf("rocketmq: unknown compression %v", c)
	}
	if len(out) >= len(body) {
		return body, 0, nil
	}
	return out, c.sysFlag(), nil
}

// errInflatedTooLarge reports a compressed body that inflates past
// Options.MaxInflatedSize.
var errInflatedTooLarge = errors.New("inflates past Options.MaxInflatedSize")

// zstdMinDecoded is the least output a zstd decoder is configured for.
// The decoder refuses a frame whose window is larger than its output
// limit, and streaming zstd encoders declare windows of some MiB whatever
// the body's length (2 MiB at the Java client's default level), so the
// decoders allow this much and the limit is checked afterwards.
const zstdMinDecoded = 8 << 20

// zstdDecoders holds a shared *zstd.Decoder for each output limit:
// DecodeAll may be called concurrently.
var zstdDecoders sync.Map

func zstdDecoder(limit int) (*zstd.Decoder, error) {
	limit = max(limit, zstdMinDecoded)
	if d, ok := zstdDecoders.Load(limit); ok {
		return d.(*zstd.Decoder), nil
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(limit)), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	if prev, loaded := zstdDecoders.LoadOrStore(limit, d); loaded {
		d.Close()
		return prev.(*zstd.Decoder), nil
	}
	return d, nil
}

// inflate returns a pulled message's body, decompressed when its system
// flag says it is compressed, and refuses one that inflates to more than
// limit bytes.
func inflate(body []byte, sysFlag uint32, limit int) ([]byte, error) {
	c, err := compressionOf(sysFlag)
	if err != nil {
		return nil, err
	}
	if c == CompressionNone {
		return bytes.Clone(body), nil
	}
	if len(body) == 0 {
		// No stream of these formats is empty, though the lz4 and zstd
		// readers would take it for one without content.
		return nil, fmt.Errorf("%v body: empty", c)
	}
	var out []byte
	switch c {
	case CompressionZlib:
		var zr io.ReadCloser
		if zr, err = zlib.NewReader(bytes.NewReader(body)); err == nil {
			out, err = readAtMost(zr, limit)
		}
	case CompressionLZ4:
		out, err = readAtMost(lz4.NewReader(bytes.NewReader(body)), limit)
	case CompressionZstd:
		var d *zstd.Decoder
		if d, err = zstdDecoder(limit); err == nil {
			out, err = d.DecodeAll(body, nil)
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) ||
				err == nil && len(out) > limit {
				err = errInflatedTooLarge
			}
		}
	}
	if errors.Is(err, errInflatedTooLarge) {
		return nil, fmt.Errorf("%v body %w (%d bytes)", c, err, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%v body: %w", c, err)
	}
	return out, nil
}

// readAtMost reads r to its end, failing with errInflatedTooLarge past
// limit bytes.
func readAtMost(r io.Reader, limit int) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, errInflatedTooLarge
	}
	return out, nil
}

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

// A bodyError reports a pulled message whose body could not be decoded.
// Its frame is intact, so the messages after it are decoded still.
type bodyError struct {
	queueID int
	offset  int64
	err     error
}

func (e *bodyError) Error() string {
	return fmt.Sprintf("rocketmq: message at offset %d of queue %d delivered undecoded (header %s): %v", e.offset, e.queueID, HeaderBodyError, e.err)
}

func (e *bodyError) Unwrap() error { return e.err }

// decodeMessages parses the body of a pull response. A message whose
// body is compressed may inflate to maxInflated bytes (0 means
// DefaultMaxInflatedSize). A message whose body cannot be decoded comes
// with its body as stored and HeaderBodyError, and a *bodyError naming
// its queue offset joins the error; a malformed frame ends the parse,
// since the messages after it cannot be found.
func decodeMessages(data []byte, maxInflated int) ([]*wireMessage, error) {
	if maxInflated <= 0 {
		maxInflated = DefaultMaxInflatedSize
	}
	var out []*wireMessage
	var errs []error
	for len(data) > 0 {
		if len(data) < 4 {
			return out, errors.Join(append(errs, errMalformed)...)
		}
		size := int(binary.BigEndian.Uint32(data))
		if size < 4 || size > len(data) {
			return out, errors.Join(append(errs, errMalformed)...)
		}
		m, err := decodeMessage(data[:size], maxInflated)
		var be *bodyError
		switch {
		case errors.As(err, &be):
			errs = append(errs, err)
			out = append(out, m)
		case err != nil:
			return out, errors.Join(append(errs, err)...)
		default:
			out = append(out, m)
		}
		data = data[size:]
	}
	return out, errors.Join(errs...)
}

type reader struct {
	b   []byte
	err bool
}

// next returns the next n bytes. Past the end it records the error and
// returns zeros, enough for the fixed-size reads: a length read from the
// message is not allocated.
func (r *reader) next(n int) []byte {
	if r.err || n < 0 || n > len(r.b) {
		r.err = true
		return make([]byte, min(max(n, 0), 8))
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.next(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.next(8)) }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.next(2)) }

// decodeMessage parses one message of a pull response, inflating its
// body to at most maxInflated bytes.
func decodeMessage(b []byte, maxInflated int) (*wireMessage, error) {
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
	m.props = decodeProperties(props)
	inflated, err := inflate(body, sysFlag, maxInflated)
	if err != nil {
		// Delivered all the same, with the body as stored and the
		// reason in a header, so that the message is dead-lettered
		// (a task that does not decode) or handled, not skipped.
		m.body = bytes.Clone(body)
		m.props[HeaderPrefix+HeaderBodyError] = err.Error()
		return m, &bodyError{queueID: m.queueID, offset: m.queueOffset, err: err}
	}
	m.body = inflated
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
