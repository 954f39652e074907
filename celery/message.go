package celery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// HeaderTyped lists, comma-separated, the headers whose values are JSON
// text standing for typed values. The RabbitMQ adapter reads and writes
// the same name.
const HeaderTyped = wire.Typed

// Header names of Celery's protocol version 2.
const (
	hLang          = "lang"
	hTask          = "task"
	hID            = "id"
	hShadow        = "shadow"
	hETA           = "eta"
	hExpires       = "expires"
	hGroup         = "group"
	hGroupIndex    = "group_index"
	hRetries       = "retries"
	hTimeLimit     = "timelimit"
	hRootID        = "root_id"
	hParentID      = "parent_id"
	hArgsRepr      = "argsrepr"
	hKwargsRepr    = "kwargsrepr"
	hOrigin        = "origin"
	hIgnoreResult  = "ignore_result"
	hNesting       = "replaced_task_nesting"
	hStampedHeader = "stamped_headers"
	hStamps        = "stamps"

	contentType     = "application/json"
	contentEncoding = "utf-8"
)

// Errors of Decode. Each matches ErrMalformed with errors.Is as well.
var (
	// ErrMalformed reports a message that is not a Celery protocol 2 task.
	ErrMalformed = errors.New("celery: malformed task message")
	// ErrMissingHeader reports a message without the id or task header.
	ErrMissingHeader = fmt.Errorf("%w: missing header", ErrMalformed)
	// ErrBadHeader reports a header whose value has the wrong type or form.
	ErrBadHeader = fmt.Errorf("%w: bad header", ErrMalformed)
	// ErrBadBody reports a body that is not [args, kwargs, embed] in JSON.
	ErrBadBody = fmt.Errorf("%w: bad body", ErrMalformed)
	// ErrContentType reports a serializer other than JSON (pickle, yaml,
	// msgpack), which this package does not read.
	ErrContentType = fmt.Errorf("%w: unsupported content type", ErrMalformed)
)

// Request is one task invocation as a Celery message carries it.
//
// Args and Kwargs hold the JSON of each argument, so a handler decodes
// them into its own types (Bind, Kwarg).
type Request struct {
	// ID is the task id, a UUID; Encode assigns one when empty.
	ID string
	// Task is the registered task name, such as "tasks.send_sms_code".
	Task   string
	Args   []json.RawMessage
	Kwargs map[string]json.RawMessage
	// ETA is when the task is due; zero means at once.
	ETA time.Time
	// Expires is when the task is discarded unrun; zero means never.
	Expires time.Time
	// Retries counts the retries before this message.
	Retries int
	// TimeLimit and SoftTimeLimit are the worker's limits; zero means the
	// worker's default.
	TimeLimit, SoftTimeLimit time.Duration
	// RootID is the id of the first task of a workflow; Encode defaults it
	// to ID. ParentID is the task that sent this one.
	RootID, ParentID string
	// Group is the id of the group the task belongs to; GroupIndex its
	// position there, when set.
	Group      string
	GroupIndex *int
	// Shadow is the name shown in logs instead of Task.
	Shadow string
	// Lang is the producer's language, "py" from Celery; Encode sends "go".
	Lang string
	// Origin is the producer's node name, "<pid>@<host>" by default.
	Origin string
	// ArgsRepr and KwargsRepr are printed forms for monitoring; Encode
	// defaults them to the JSON of the arguments.
	ArgsRepr, KwargsRepr string
	// IgnoreResult asks the worker not to store the result; false leaves
	// it to the task's own setting.
	IgnoreResult bool
	// Embed is the body's third element (callbacks, errbacks, chain,
	// chord) as received; Encode sends all four as null when it is empty.
	Embed json.RawMessage
}

// NewRequest returns the request that calls task with the given arguments,
// each encoded as JSON.
func NewRequest(task string, args []any, kwargs map[string]any) (Request, error) {
	r := Request{Task: task, Args: make([]json.RawMessage, len(args))}
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return Request{}, fmt.Errorf("celery: argument %d: %w", i, err)
		}
		r.Args[i] = b
	}
	if len(kwargs) > 0 {
		r.Kwargs = make(map[string]json.RawMessage, len(kwargs))
		for k, v := range kwargs {
			b, err := json.Marshal(v)
			if err != nil {
				return Request{}, fmt.Errorf("celery: keyword argument %s: %w", k, err)
			}
			r.Kwargs[k] = b
		}
	}
	return r, nil
}

// Bind decodes the positional arguments into dst, in order. Fewer
// arguments than dst leave the rest untouched; more is an error, since
// Python would refuse the call too.
func (r Request) Bind(dst ...any) error {
	if len(r.Args) > len(dst) {
		return fmt.Errorf("celery: %s got %d positional arguments, want at most %d", r.Task, len(r.Args), len(dst))
	}
	for i, a := range r.Args {
		if err := json.Unmarshal(a, dst[i]); err != nil {
			return fmt.Errorf("celery: %s argument %d: %w", r.Task, i, err)
		}
	}
	return nil
}

// Kwarg decodes the keyword argument name into dst and reports whether it
// was given.
func (r Request) Kwarg(name string, dst any) (bool, error) {
	v, ok := r.Kwargs[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return true, fmt.Errorf("celery: %s keyword argument %s: %w", r.Task, name, err)
	}
	return true, nil
}

var defaultOrigin = func() string {
	host, _ := os.Hostname()
	return strconv.Itoa(os.Getpid()) + "@" + host
}()

// Encode builds the Celery protocol 2 message of r: the headers Celery 5
// sends, content type application/json in utf-8, the task id as message
// and correlation id, and the body [args, kwargs, embed].
func Encode(r Request) (*bus.Message, error) {
	if r.Task == "" {
		return nil, fmt.Errorf("%w: empty task name", bus.ErrInvalidMessage)
	}
	if r.ID == "" {
		r.ID = uuid.NewString()
	}
	if r.RootID == "" {
		r.RootID = r.ID
	}
	if r.Lang == "" {
		r.Lang = "go"
	}
	if r.Origin == "" {
		r.Origin = defaultOrigin
	}
	args := r.Args
	if args == nil {
		args = []json.RawMessage{}
	}
	kwargs := r.Kwargs
	if kwargs == nil {
		kwargs = map[string]json.RawMessage{}
	}
	embed := r.Embed
	if len(embed) == 0 {
		embed = json.RawMessage(`{"callbacks":null,"errbacks":null,"chain":null,"chord":null}`)
	}
	body, err := json.Marshal([]any{args, kwargs, embed})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", bus.ErrInvalidMessage, err)
	}
	if r.ArgsRepr == "" {
		r.ArgsRepr = string(mustJSON(args))
	}
	if r.KwargsRepr == "" {
		r.KwargsRepr = string(mustJSON(kwargs))
	}

	h := typedHeaders{bus.Headers{}, nil}
	h.str(hLang, r.Lang)
	h.str(hTask, r.Task)
	h.str(hID, r.ID)
	h.optStr(hShadow, r.Shadow)
	h.optTime(hETA, r.ETA)
	h.optTime(hExpires, r.Expires)
	h.optStr(hGroup, r.Group)
	if r.GroupIndex != nil {
		h.typed(hGroupIndex, *r.GroupIndex)
	} else {
		h.typed(hGroupIndex, nil)
	}
	h.typed(hRetries, r.Retries)
	h.typed(hTimeLimit, []any{seconds(r.TimeLimit), seconds(r.SoftTimeLimit)})
	h.str(hRootID, r.RootID)
	h.optStr(hParentID, r.ParentID)
	h.str(hArgsRepr, r.ArgsRepr)
	h.str(hKwargsRepr, r.KwargsRepr)
	h.str(hOrigin, r.Origin)
	if r.IgnoreResult {
		h.typed(hIgnoreResult, true)
	} else {
		h.typed(hIgnoreResult, nil)
	}
	h.typed(hNesting, 0)
	h.typed(hStampedHeader, nil)
	h.typed(hStamps, map[string]any{})
	h.h["content-type"] = contentType
	h.h["content-encoding"] = contentEncoding
	h.h[bus.HeaderCorrelationID] = r.ID
	h.h[HeaderTyped] = strings.Join(h.names, ",")
	return &bus.Message{ID: r.ID, Headers: h.h, Body: body}, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// seconds is a time limit as Celery writes it: seconds, or null for none.
func seconds(d time.Duration) any {
	if d <= 0 {
		return nil
	}
	return d.Seconds()
}

// isoTime is the form of Python's datetime.isoformat() for an aware time.
const isoTime = "2006-01-02T15:04:05.000000-07:00"

type typedHeaders struct {
	h     bus.Headers
	names []string
}

func (t *typedHeaders) str(k, v string) { t.h[k] = v }

func (t *typedHeaders) optStr(k, v string) {
	if v == "" {
		t.typed(k, nil)
		return
	}
	t.h[k] = v
}

func (t *typedHeaders) optTime(k string, v time.Time) {
	if v.IsZero() {
		t.typed(k, nil)
		return
	}
	t.h[k] = v.Format(isoTime)
}

func (t *typedHeaders) typed(k string, v any) {
	t.h[k] = string(mustJSON(v))
	t.names = append(t.names, k)
}

// typedNames returns the set of header names listed in HeaderTyped.
func typedNames(h bus.Headers) map[string]bool {
	list := h[HeaderTyped]
	if list == "" {
		return nil
	}
	names := map[string]bool{}
	for n := range strings.SplitSeq(list, ",") {
		names[strings.TrimSpace(n)] = true
	}
	return names
}

// Decode reads a Celery protocol 2 task message. It needs the id and task
// headers and a JSON body of three elements; the other headers are read
// when present. Errors match ErrMalformed and one of its refinements.
func Decode(m *bus.Message) (Request, error) {
	if m == nil {
		return Request{}, fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if ct := m.Headers.Get("content-type"); ct != "" && ct != contentType {
		return Request{}, fmt.Errorf("%w: %q", ErrContentType, ct)
	}
	typed := typedNames(m.Headers)
	v := headerReader{h: m.Headers, typed: typed}
	var r Request
	r.ID = v.str(hID)
	r.Task = v.str(hTask)
	if v.err != nil {
		return Request{}, v.err
	}
	if r.ID == "" || r.Task == "" {
		return Request{}, fmt.Errorf("%w: id and task are required (id %q, task %q)", ErrMissingHeader, r.ID, r.Task)
	}
	r.Lang = v.str(hLang)
	r.Shadow = v.str(hShadow)
	r.Group = v.str(hGroup)
	r.RootID = v.str(hRootID)
	r.ParentID = v.str(hParentID)
	r.ArgsRepr = v.str(hArgsRepr)
	r.KwargsRepr = v.str(hKwargsRepr)
	r.Origin = v.str(hOrigin)
	r.ETA = v.time(hETA)
	r.Expires = v.time(hExpires)
	if n, ok := v.int(hRetries); ok {
		r.Retries = n
	}
	if n, ok := v.int(hGroupIndex); ok {
		r.GroupIndex = &n
	}
	r.IgnoreResult = v.bool(hIgnoreResult)
	r.TimeLimit, r.SoftTimeLimit = v.timeLimits(hTimeLimit)
	if v.err != nil {
		return Request{}, v.err
	}
	if err := decodeBody(m.Body, &r); err != nil {
		return Request{}, err
	}
	return r, nil
}

func decodeBody(body []byte, r *Request) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(body, &parts); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBody, err)
	}
	if len(parts) != 3 {
		return fmt.Errorf("%w: %d elements, want [args, kwargs, embed]", ErrBadBody, len(parts))
	}
	if !isNull(parts[0]) {
		if err := json.Unmarshal(parts[0], &r.Args); err != nil {
			return fmt.Errorf("%w: args: %w", ErrBadBody, err)
		}
	}
	if !isNull(parts[1]) {
		if err := json.Unmarshal(parts[1], &r.Kwargs); err != nil {
			return fmt.Errorf("%w: kwargs: %w", ErrBadBody, err)
		}
	}
	if !isNull(parts[2]) {
		var embed map[string]json.RawMessage
		if err := json.Unmarshal(parts[2], &embed); err != nil {
			return fmt.Errorf("%w: embed: %w", ErrBadBody, err)
		}
		r.Embed = parts[2]
	}
	return nil
}

func isNull(b json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(b), []byte("null")) }

// headerReader reads Celery's headers whether or not they arrived typed:
// a broker without typed headers hands over printed values ("0", "None").
// It keeps the first error.
type headerReader struct {
	h     bus.Headers
	typed map[string]bool
	err   error
}

func (v *headerReader) fail(k, raw string, why any) {
	if v.err == nil {
		v.err = fmt.Errorf("%w: %s %q: %v", ErrBadHeader, k, raw, why)
	}
}

// value returns the JSON value of a typed header, or the raw string.
func (v *headerReader) value(k string) (any, bool) {
	raw, ok := v.h[k]
	if !ok {
		return nil, false
	}
	if !v.typed[k] {
		return raw, true
	}
	// Most of Celery's typed headers are null or small integers; those
	// skip the decoder.
	switch {
	case raw == "null":
		return nil, true
	case raw == "true":
		return true, true
	case raw == "false":
		return false, true
	case isJSONInt(raw):
		return json.Number(raw), true
	case raw == "[null, null]" || raw == "[null,null]":
		return []any{nil, nil}, true
	case raw == "{}":
		return map[string]any{}, true
	}
	var x any
	d := json.NewDecoder(strings.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&x); err != nil {
		v.fail(k, raw, err)
		return nil, false
	}
	return x, true
}

// isJSONInt reports whether s is a JSON integer: an optional minus, then
// 0 or digits not starting with 0.
func isJSONInt(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (v *headerReader) str(k string) string {
	x, _ := v.value(k)
	switch x := x.(type) {
	case nil:
		return ""
	case string:
		if !v.typed[k] && x == "None" {
			return ""
		}
		return x
	default:
		v.fail(k, v.h[k], "not a string")
		return ""
	}
}

func (v *headerReader) int(k string) (int, bool) {
	x, _ := v.value(k)
	var s string
	switch x := x.(type) {
	case nil:
		return 0, false
	case json.Number:
		s = x.String()
	case string:
		if x == "" || x == "None" {
			return 0, false
		}
		s = x
	default:
		v.fail(k, v.h[k], "not an integer")
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		v.fail(k, s, "not an integer")
		return 0, false
	}
	return n, true
}

func (v *headerReader) bool(k string) bool {
	x, _ := v.value(k)
	switch x := x.(type) {
	case bool:
		return x
	case string:
		return x == "True" || x == "true"
	}
	return false
}

func (v *headerReader) time(k string) time.Time {
	s := v.str(k)
	if s == "" {
		return time.Time{}
	}
	t, err := parseISO(s)
	if err != nil {
		v.fail(k, s, err)
	}
	return t
}

// parseISO reads the forms of Python's datetime.isoformat(); a time
// without an offset is taken as UTC, which is Celery's default timezone.
func parseISO(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not an ISO 8601 time")
}

// timeLimits reads [hard, soft] in seconds, either of which may be null.
func (v *headerReader) timeLimits(k string) (hard, soft time.Duration) {
	x, ok := v.value(k)
	if !ok || x == nil {
		return 0, 0
	}
	list, isList := x.([]any)
	if !isList {
		if s, isStr := x.(string); isStr && !v.typed[k] {
			return parsePrintedLimits(s)
		}
		v.fail(k, v.h[k], "not a list")
		return 0, 0
	}
	if len(list) != 2 {
		v.fail(k, v.h[k], "not [hard, soft]")
		return 0, 0
	}
	d := make([]time.Duration, 2)
	for i, e := range list {
		switch e := e.(type) {
		case nil:
		case json.Number:
			f, err := e.Float64()
			if err != nil || f < 0 || f > math.MaxInt64/float64(time.Second) {
				v.fail(k, v.h[k], "limit out of range")
				return 0, 0
			}
			d[i] = time.Duration(f * float64(time.Second))
		default:
			v.fail(k, v.h[k], "limit is not a number")
			return 0, 0
		}
	}
	return d[0], d[1]
}

// parsePrintedLimits reads a list printed by a broker that has no typed
// headers, such as "[30 None]" or "[None, None]"; what it cannot read is
// no limit, since the worker's own limits then apply.
func parsePrintedLimits(s string) (hard, soft time.Duration) {
	f := strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune("[](), ", r) })
	if len(f) != 2 {
		return 0, 0
	}
	d := make([]time.Duration, 2)
	for i, e := range f {
		if x, err := strconv.ParseFloat(e, 64); err == nil && x > 0 && x < math.MaxInt64/float64(time.Second) {
			d[i] = time.Duration(x * float64(time.Second))
		}
	}
	return d[0], d[1]
}

// withRetry returns a copy of m for Celery's retry: the same task with
// retries one higher and a new eta, every other header kept.
func withRetry(m *bus.Message, retries int, eta time.Time) *bus.Message {
	c := m.Clone()
	c.ID = bus.NewID()
	c.Attempt = 0
	c.PublishedAt = time.Time{}
	names := typedNames(c.Headers)
	if names == nil {
		names = map[string]bool{}
	}
	c.Headers[hRetries] = strconv.Itoa(retries)
	names[hRetries] = true
	c.Headers[hETA] = eta.UTC().Format(isoTime)
	delete(names, hETA)
	list := slices.Sorted(maps.Keys(names))
	c.Headers[HeaderTyped] = strings.Join(list, ",")
	return c
}
