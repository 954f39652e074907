package rocketmq

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// storedMessage is a message as the broker stores it and a pull returns
// it.
type storedMessage struct {
	magic     uint32 // magicV2 when 0
	queueID   int32
	offset    int64
	sysFlag   int32
	bornAt    time.Time
	storedAt  time.Time
	reconsume int32
	topic     string
	body      []byte
	props     string
}

// encodeStored writes m in the broker's stored-message layout, the one
// decodeMessage parses.
func encodeStored(m storedMessage) []byte {
	if m.magic == 0 {
		m.magic = magicV2
	}
	host := func(b []byte, v6 bool) []byte {
		if v6 {
			return append(b, make([]byte, 16+4)...)
		}
		return append(b, 127, 0, 0, 1, 0, 0, 0x26, 0x94)
	}
	b := make([]byte, 4, 256+len(m.body)+len(m.props))
	b = binary.BigEndian.AppendUint32(b, m.magic)
	b = binary.BigEndian.AppendUint32(b, 0) // body CRC
	b = binary.BigEndian.AppendUint32(b, uint32(m.queueID))
	b = binary.BigEndian.AppendUint32(b, 0) // flag
	b = binary.BigEndian.AppendUint64(b, uint64(m.offset))
	b = binary.BigEndian.AppendUint64(b, 0) // commit log offset
	b = binary.BigEndian.AppendUint32(b, uint32(m.sysFlag))
	b = binary.BigEndian.AppendUint64(b, uint64(m.bornAt.UnixMilli()))
	b = host(b, m.sysFlag&sysFlagBornHostV6 != 0)
	b = binary.BigEndian.AppendUint64(b, uint64(m.storedAt.UnixMilli()))
	b = host(b, m.sysFlag&sysFlagStoreHostV6 != 0)
	b = binary.BigEndian.AppendUint32(b, uint32(m.reconsume))
	b = binary.BigEndian.AppendUint64(b, 0) // prepared transaction offset
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.body)))
	b = append(b, m.body...)
	if m.magic == magicV2 {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.topic)))
	} else {
		b = append(b, byte(len(m.topic)))
	}
	b = append(b, m.topic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.props)))
	b = append(b, m.props...)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// textBody returns n bytes of text that compresses well.
func textBody(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "order %d: 3 items, shipped to warehouse %d\n", i, i%7)
	}
	return b.Bytes()[:n]
}

var compressions = []Compression{CompressionZlib, CompressionLZ4, CompressionZstd}

// RocketMQ 5's MessageSysFlag: the compressed bit, and the type in bits
// 8-10 (LZ4 1, ZSTD 2, ZLIB 3).
var wantSysFlag = map[Compression]int32{CompressionZlib: 0x301, CompressionLZ4: 0x101, CompressionZstd: 0x201}

func TestCodecCompressRoundTrip(t *testing.T) {
	at := time.UnixMilli(1700000000123)
	var data []byte
	var want [][]byte
	for i, c := range append([]Compression{CompressionNone}, compressions...) {
		for j, n := range []int{DefaultCompressOver, 200 << 10, 3 << 20} {
			body := textBody(n)
			out, flag, err := compressBody(body, c, DefaultCompressOver)
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			if flag != wantSysFlag[c] {
				t.Errorf("%v: system flag %#x, want %#x", c, flag, wantSysFlag[c])
			}
			if c != CompressionNone && len(out) >= len(body)/2 {
				t.Errorf("%v: %d bytes compressed to %d", c, len(body), len(out))
			}
			// Both host kinds and both magic codes.
			if j == 1 {
				flag |= sysFlagBornHostV6 | sysFlagStoreHostV6
			}
			magic := uint32(magicV2)
			if j == 2 {
				magic = magicV1
			}
			data = append(data, encodeStored(storedMessage{magic: magic, queueID: 3, offset: int64(10*i + j), sysFlag: flag,
				bornAt: at, storedAt: at.Add(time.Second), reconsume: 2, topic: "orders", body: out, props: "a\x011\x02b\x012\x02"})...)
			want = append(want, body)
		}
	}
	msgs, err := decodeMessages(data, DefaultMaxInflatedSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(want) {
		t.Fatalf("decoded %d messages, want %d", len(msgs), len(want))
	}
	for k, m := range msgs {
		i, j := k/3, k%3
		if !bytes.Equal(m.body, want[k]) {
			t.Errorf("message %d: body of %d bytes differs from the %d sent", k, len(m.body), len(want[k]))
		}
		if m.queueID != 3 || m.queueOffset != int64(10*i+j) || m.topic != "orders" || m.reconsumeTimes != 2 ||
			!m.bornAt.Equal(at) || !m.storedAt.Equal(at.Add(time.Second)) || m.props["a"] != "1" || m.props["b"] != "2" {
			t.Errorf("message %d: decoded %+v", k, m)
		}
	}
}

func TestCompressBodyLeavesAlone(t *testing.T) {
	short := textBody(DefaultCompressOver - 1)
	noise := make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(rand.Uint32())
	}
	for _, c := range compressions {
		for name, body := range map[string][]byte{"short": short, "incompressible": noise, "empty": nil} {
			out, flag, err := compressBody(body, c, DefaultCompressOver)
			if err != nil || flag != 0 || !bytes.Equal(out, body) {
				t.Errorf("%v, %s body: flag %#x, %d bytes, %v; want it as it is", c, name, flag, len(out), err)
			}
		}
	}
	body := textBody(1 << 20)
	if out, flag, err := compressBody(body, CompressionNone, 0); err != nil || flag != 0 || !bytes.Equal(out, body) {
		t.Errorf("CompressionNone: flag %#x, %v", flag, err)
	}
	if _, _, err := compressBody(body, Compression(9), 0); err == nil {
		t.Error("Compression(9) compressed")
	}
}

// Clients before RocketMQ 5 set the compressed bit with no type: zlib.
func TestDecodeUnmarkedCompressionIsZlib(t *testing.T) {
	body := textBody(10 << 10)
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(body)
	w.Close()
	msgs, err := decodeMessages(encodeStored(storedMessage{offset: 1, sysFlag: sysFlagCompressed, body: buf.Bytes()}), 0)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].body, body) {
		t.Fatalf("decoded %d messages, %v; want the zlib body", len(msgs), err)
	}
}

// The LZ4 frame of RocketMQ's Lz4Compressor (lz4-java's
// LZ4FrameOutputStream with its defaults): FLG 0x60 (version 1,
// independent blocks, no checksums), BD 0x70 (4 MiB blocks); here with
// one block stored uncompressed.
func TestDecodeLZ4JavaFrame(t *testing.T) {
	body := []byte("a body the compressor could not shorten")
	frame := []byte{0x04, 0x22, 0x4d, 0x18, 0x60, 0x70, 0x73}
	frame = binary.LittleEndian.AppendUint32(frame, uint32(len(body))|1<<31)
	frame = append(frame, body...)
	frame = binary.LittleEndian.AppendUint32(frame, 0) // end mark
	msgs, err := decodeMessages(encodeStored(storedMessage{sysFlag: wantSysFlag[CompressionLZ4], body: frame}), 0)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].body, body) {
		t.Fatalf("decoded %d messages, %v; want %q", len(msgs), err, body)
	}
	// What compressBody writes starts likewise, with a content checksum
	// (FLG 0x64), which lz4-java's LZ4FrameInputStream checks.
	out, _, err := compressBody(textBody(DefaultCompressOver), CompressionLZ4, 0)
	if err != nil || !bytes.HasPrefix(out, []byte{0x04, 0x22, 0x4d, 0x18, 0x64}) {
		t.Fatalf("lz4 frame starts % x, %v", out[:min(len(out), 7)], err)
	}
}

func TestInflateLimit(t *testing.T) {
	const n = 1 << 20
	body := textBody(n)
	for _, c := range compressions {
		out, flag, err := compressBody(body, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		data := encodeStored(storedMessage{queueID: 2, offset: 41, sysFlag: flag, body: out})
		if msgs, err := decodeMessages(data, n); err != nil || len(msgs) != 1 {
			t.Errorf("%v at a limit of its size: %d messages, %v", c, len(msgs), err)
		}
		for _, limit := range []int{n - 1, 1000} {
			msgs, err := decodeMessages(data, limit)
			if len(msgs) != 1 || msgs[0].props[HeaderPrefix+HeaderBodyError] == "" || !errors.Is(err, errInflatedTooLarge) {
				t.Errorf("%v at a limit of %d: %d messages, %v; want errInflatedTooLarge", c, limit, len(msgs), err)
				continue
			}
			var be *bodyError
			if !errors.As(err, &be) || be.offset != 41 || be.queueID != 2 ||
				!strings.Contains(err.Error(), "offset 41 of queue 2") || !strings.Contains(err.Error(), c.String()) {
				t.Errorf("%v at a limit of %d: error %q does not say which message", c, limit, err)
			}
		}
	}
}

// A zstd frame that declares its content size past the limit is refused
// before anything is inflated.
func TestInflateLimitZstdDeclaredSize(t *testing.T) {
	out, flag, err := compressBody(make([]byte, 32<<20), CompressionZstd, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = decodeMessages(encodeStored(storedMessage{sysFlag: flag, body: out}), 16<<20)
	if !errors.Is(err, errInflatedTooLarge) {
		t.Fatalf("got %v, want errInflatedTooLarge", err)
	}
}

// A message whose body does not decode comes undecoded, with the reason
// in HeaderBodyError, and the error names its offset; the messages around
// it are decoded.
func TestDecodeBodyErrorKeepsOthers(t *testing.T) {
	good := func(off int64) []byte {
		return encodeStored(storedMessage{offset: off, body: []byte(fmt.Sprint("body ", off))})
	}
	var data []byte
	data = append(data, good(1)...)
	data = append(data, encodeStored(storedMessage{offset: 2, sysFlag: sysFlagCompressed | 5<<8, body: []byte("x")})...)
	data = append(data, encodeStored(storedMessage{offset: 3, sysFlag: wantSysFlag[CompressionZstd], body: []byte("not zstd")})...)
	data = append(data, good(4)...)
	msgs, err := decodeMessages(data, 0)
	if len(msgs) != 4 || msgs[0].queueOffset != 1 || msgs[3].queueOffset != 4 || string(msgs[3].body) != "body 4" {
		t.Fatalf("decoded %d messages, want 4, at offsets 1 to 4", len(msgs))
	}
	for i, body := range map[int]string{1: "x", 2: "not zstd"} {
		m := msgs[i].toBus()
		if string(m.Body) != body || m.Headers[HeaderBodyError] == "" {
			t.Errorf("undecodable message %d: body %q, headers %v; want the stored body and %s", i, m.Body, m.Headers, HeaderBodyError)
		}
	}
	if h := msgs[0].toBus().Headers; h[HeaderBodyError] != "" {
		t.Errorf("a decoded message has %s %q", HeaderBodyError, h[HeaderBodyError])
	}
	for _, want := range []string{"offset 2 of queue 0", "unknown compression type 5", "offset 3 of queue 0", "zstd body"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// A malformed frame still ends the parse, reporting the earlier
	// failures too.
	data = append(data, 0, 0, 0, 99)
	msgs, err = decodeMessages(data, 0)
	if len(msgs) != 4 || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), "offset 3 of queue 0") {
		t.Fatalf("decoded %d messages, %v", len(msgs), err)
	}
}

func TestDecodeUnknownCompressionType(t *testing.T) {
	for typ := int32(4); typ <= 7; typ++ {
		data := encodeStored(storedMessage{offset: 9, sysFlag: sysFlagCompressed | typ<<8, body: []byte("body")})
		msgs, err := decodeMessages(data, 0)
		var be *bodyError
		if len(msgs) != 1 || string(msgs[0].body) != "body" || !errors.As(err, &be) || be.offset != 9 ||
			!strings.Contains(err.Error(), fmt.Sprintf("unknown compression type %d", typ)) {
			t.Errorf("type %d: %d messages, %v", typ, len(msgs), err)
		}
	}
	// The type without the compressed bit is no compression.
	msgs, err := decodeMessages(encodeStored(storedMessage{sysFlag: 7 << 8, body: []byte("body")}), 0)
	if err != nil || len(msgs) != 1 || string(msgs[0].body) != "body" {
		t.Errorf("type bits without the compressed bit: %d messages, %v", len(msgs), err)
	}
}

// Corrupt or cut compressed bodies are errors, not garbage.
func TestDecodeCorruptCompressedBody(t *testing.T) {
	body := textBody(64 << 10)
	for _, c := range compressions {
		out, flag, err := compressBody(body, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		for name, bad := range map[string][]byte{
			"cut":   out[:len(out)/2],
			"empty": nil,
			"flipped": func() []byte {
				b := bytes.Clone(out)
				b[len(b)-5] ^= 0xff
				return b
			}(),
		} {
			msgs, err := decodeMessages(encodeStored(storedMessage{sysFlag: flag, body: bad}), 0)
			if err == nil && (len(msgs) != 1 || !bytes.Equal(msgs[0].body, body)) {
				t.Errorf("%v, %s: decoded a body of %d bytes without error", c, name, len(msgs[0].body))
			}
		}
	}
}

// The encoders and decoders leave no goroutine running (the conformance
// suite checks with goleak).
func TestCompressNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, c := range compressions {
		out, flag, err := compressBody(textBody(1<<20), c, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMessages(encodeStored(storedMessage{sysFlag: flag, body: out}), 0); err != nil {
			t.Fatal(err)
		}
	}
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(time.Second); n > before && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if n > before {
		t.Errorf("%d goroutines before, %d after", before, n)
	}
}

func TestCompressionParse(t *testing.T) {
	for _, c := range append([]Compression{CompressionNone}, compressions...) {
		for _, s := range []string{c.String(), strings.ToUpper(c.String())} {
			if got, err := ParseCompression(s); err != nil || got != c {
				t.Errorf("ParseCompression(%q) = %v, %v; want %v", s, got, err, c)
			}
		}
	}
	for _, s := range []string{"", "gzip", "snappy", "zlib "} {
		if _, err := ParseCompression(s); err == nil {
			t.Errorf("ParseCompression(%q) succeeded", s)
		}
	}
	if s := Compression(9).String(); s != "Compression(9)" {
		t.Errorf("Compression(9).String() = %q", s)
	}
}

func TestCompressionOptions(t *testing.T) {
	for raw, want := range map[string]Options{
		"rocketmq://h:1?compression=zstd&compress_over=1024&max_inflated_size=1048576": {
			NameServers: []string{"h:1"}, Compression: CompressionZstd, CompressOver: 1024, MaxInflatedSize: 1 << 20},
		"rocketmq://h:1?compression=LZ4":  {NameServers: []string{"h:1"}, Compression: CompressionLZ4},
		"rocketmq://h:1?compression=none": {NameServers: []string{"h:1"}},
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseURL(u)
		if err != nil {
			t.Errorf("ParseURL(%s): %v", raw, err)
			continue
		}
		if got.Compression != want.Compression || got.CompressOver != want.CompressOver || got.MaxInflatedSize != want.MaxInflatedSize {
			t.Errorf("ParseURL(%s) = %+v, want %+v", raw, got, want)
		}
	}
	for _, raw := range []string{
		"rocketmq://h?compression=gzip", "rocketmq://h?compression=", "rocketmq://h?compress_over=0",
		"rocketmq://h?compress_over=x", "rocketmq://h?max_inflated_size=-1", "rocketmq://h?max_inflated_size=1MiB",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseURL(u); !errors.Is(err, bus.ErrBadURL) {
			t.Errorf("ParseURL(%s): %v, want ErrBadURL", raw, err)
		}
	}
	o := Options{}.withDefaults()
	if o.Compression != CompressionNone || o.CompressOver != DefaultCompressOver || o.MaxInflatedSize != DefaultMaxInflatedSize {
		t.Errorf("defaults: %v, %d, %d", o.Compression, o.CompressOver, o.MaxInflatedSize)
	}
	err := Options{Compression: Compression(7), CompressOver: -1, MaxInflatedSize: -1}.Validate()
	var ce *bus.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("Validate: %v, want a ConfigError of 3 problems", err)
	}
	for _, want := range []string{"Compression 7", "CompressOver -1", "MaxInflatedSize -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %q does not mention %s", err, want)
		}
	}
}

// fuzzLimit is the inflate limit of FuzzDecodeMessages.
const fuzzLimit = 64 << 10

func FuzzDecodeMessages(f *testing.F) {
	body := textBody(2 << 10)
	var all []byte
	for _, c := range append([]Compression{CompressionNone}, compressions...) {
		out, flag, err := compressBody(body, c, 0)
		if err != nil {
			f.Fatal(err)
		}
		m := encodeStored(storedMessage{queueID: 1, offset: int64(c), sysFlag: flag, topic: "t", body: out, props: "k\x01v\x02"})
		f.Add(m)
		for _, cut := range []int{3, 4, 40, len(m) / 2, len(m) - 1} {
			f.Add(m[:cut])
		}
		all = append(all, m...)
	}
	f.Add(all)
	f.Add(encodeStored(storedMessage{magic: magicV1, sysFlag: sysFlagBornHostV6 | sysFlagStoreHostV6, topic: "t", body: []byte("b")}))
	// A small body that inflates past the limit.
	out, flag, _ := compressBody(make([]byte, 4*fuzzLimit), CompressionZlib, 0)
	f.Add(encodeStored(storedMessage{sysFlag: flag, body: out}))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := decodeMessages(data, fuzzLimit)
		// Walk the frames as decodeMessages does: it must return
		// exactly the messages of the frames that decode, in order, and
		// succeed only when the frames use up the data.
		var good []*wireMessage
		rest, whole, broken := data, true, false
		for len(rest) > 0 {
			size := 0
			if len(rest) >= 4 {
				size = int(binary.BigEndian.Uint32(rest))
			}
			if size < 4 || size > len(rest) {
				whole = false
				break
			}
			m, err := decodeMessage(rest[:size], fuzzLimit)
			var be *bodyError
			switch {
			case err == nil:
				sysFlag := uint32(0)
				if size >= 40 {
					sysFlag = binary.BigEndian.Uint32(rest[36:])
				}
				compressed := sysFlag&sysFlagCompressed != 0
				if compressed && len(m.body) > fuzzLimit || !compressed && len(m.body) > size {
					t.Fatalf("body of %d bytes from a frame of %d (system flag %#x), limit %d", len(m.body), size, sysFlag, fuzzLimit)
				}
				good = append(good, m)
			case errors.As(err, &be):
				broken = true
				good = append(good, m) // delivered undecoded
			case errors.Is(err, errMalformed):
				whole = false
			default:
				t.Fatalf("unexpected error %v", err)
			}
			if !whole {
				break
			}
			rest = rest[size:]
		}
		if len(msgs) != len(good) {
			t.Fatalf("decoded %d messages, the frames hold %d", len(msgs), len(good))
		}
		for i, m := range msgs {
			if m.queueOffset != good[i].queueOffset || !bytes.Equal(m.body, good[i].body) {
				t.Fatalf("message %d differs from its frame's", i)
			}
		}
		if (err == nil) != (whole && !broken) {
			t.Fatalf("error %v, frames whole %v, a body failed %v", err, whole, broken)
		}
		// The bodies are copies, not views of the response.
		resp := bytes.Clone(data)
		msgs, _ = decodeMessages(resp, fuzzLimit)
		clear(resp)
		for i, m := range msgs {
			if !bytes.Equal(m.body, good[i].body) {
				t.Fatalf("body %d changed with the response", i)
			}
		}
	})
}

// A length field past the end of its frame is not allocated (the fuzz
// seed body-length-past-frame, a body length of 1 GiB in a frame of 893
// bytes, took a second per decode).
func TestDecodeLengthPastFrame(t *testing.T) {
	m := encodeStored(storedMessage{topic: "t", body: []byte("body")})
	for _, at := range []int{len(m) - 4 - 2 - 1 - 2 - 4, len(m) - 2 - 1 - 2, len(m) - 2} { // body, topic, properties
		bad := bytes.Clone(m)
		bad[at], bad[at+1] = 0x7f, 0xff
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := decodeMessages(bad, 0); !errors.Is(err, errMalformed) {
			t.Errorf("length at %d: %v, want errMalformed", at, err)
		}
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<16 {
			t.Errorf("length at %d: decoding allocated %d bytes", at, n)
		}
	}
}
