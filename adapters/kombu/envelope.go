package kombu

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/wire"
)

// Properties omnibus adds to the envelope, next to kombu's own. Celery
// ignores properties it does not know.
const (
	propID        = wire.ID
	propKey       = wire.Key
	propPublished = wire.Published
	// propAttempt is the attempt number of the next delivery; absent
	// means 1.
	propAttempt = wire.Attempt

	// hdrTyped lists the bus headers whose values are JSON text standing
	// for typed values (Celery's retries, timelimit, null eta). The celery
	// package and the RabbitMQ adapter use the same name.
	hdrTyped           = wire.Typed
	hdrContentType     = "content-type"
	hdrContentEncoding = "content-encoding"
)

// envelope is kombu's JSON form of a message in a Redis list.
type envelope struct {
	Body            string                     `json:"body"`
	ContentEncoding *string                    `json:"content-encoding"`
	ContentType     *string                    `json:"content-type"`
	Headers         map[string]json.RawMessage `json:"headers"`
	Properties      map[string]json.RawMessage `json:"properties"`
}

type deliveryInfo struct {
	Exchange    string `json:"exchange"`
	RoutingKey  string `json:"routing_key"`
	Redelivered bool   `json:"redelivered,omitempty"`
}

// encode returns the kombu envelope of m for queue, as kombu's Redis
// transport stores what Celery publishes: the body in base64, the
// anonymous exchange with the queue as routing key, a fresh delivery tag.
func encode(m *bus.Message, queue string, attempt int) ([]byte, error) {
	typed := typedNames(m.Headers[hdrTyped])
	h := make(map[string]json.RawMessage, len(m.Headers))
	for k, v := range m.Headers {
		switch k {
		case hdrTyped, hdrContentType, hdrContentEncoding, bus.HeaderCorrelationID:
			continue
		}
		if typed[k] {
			if !json.Valid([]byte(v)) {
				return nil, fmt.Errorf("%w: header %s is listed in %s but is not JSON: %q", bus.ErrInvalidMessage, k, hdrTyped, v)
			}
			h[k] = json.RawMessage(v)
			continue
		}
		h[k] = mustJSON(v)
	}
	props := map[string]json.RawMessage{
		"delivery_mode": json.RawMessage("2"),
		"delivery_info": mustJSON(deliveryInfo{RoutingKey: queue}),
		"priority":      json.RawMessage("0"),
		"body_encoding": json.RawMessage(`"base64"`),
		"delivery_tag":  mustJSON(uuid.NewString()),
		propID:          mustJSON(m.ID),
		propPublished:   json.RawMessage(strconv.FormatInt(m.PublishedAt.UnixNano(), 10)),
	}
	if c := m.Headers[bus.HeaderCorrelationID]; c != "" {
		props["correlation_id"] = mustJSON(c)
	}
	if m.Key != "" {
		props[propKey] = mustJSON(m.Key)
	}
	if attempt > 1 {
		props[propAttempt] = json.RawMessage(strconv.Itoa(attempt))
	}
	e := envelope{
		Body:       base64.StdEncoding.EncodeToString(m.Body),
		Headers:    h,
		Properties: props,
	}
	if ct, ok := m.Headers[hdrContentType]; ok {
		e.ContentType = &ct
	}
	if ce, ok := m.Headers[hdrContentEncoding]; ok {
		e.ContentEncoding = &ce
	}
	return json.Marshal(e)
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func typedNames(list string) map[string]bool {
	if list == "" {
		return nil
	}
	names := map[string]bool{}
	for n := range strings.SplitSeq(list, ",") {
		names[strings.TrimSpace(n)] = true
	}
	return names
}

// ErrMalformed reports an entry of a queue that is not a kombu message
// envelope. The subscription moves such entries to the dead-letter queue.
var ErrMalformed = fmt.Errorf("kombu: malformed message envelope")

// received is a decoded envelope with what settling it needs.
type received struct {
	msg *bus.Message
	tag string
	// priority is the envelope's priority, 0 to 9.
	priority int
}

// decode reads a kombu envelope. Messages from other producers (Celery)
// lack the omnibus properties: the ID falls back to the Celery task id,
// then the correlation id, then the delivery tag; a message that kombu
// restored counts as a second attempt at least.
func decode(raw []byte) (received, error) {
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return received{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var r received
	if err := unmarshalProp(e.Properties, "delivery_tag", &r.tag); err != nil || r.tag == "" {
		return received{}, fmt.Errorf("%w: no delivery_tag", ErrMalformed)
	}
	var enc string
	unmarshalProp(e.Properties, "body_encoding", &enc)
	m := &bus.Message{Headers: make(bus.Headers, len(e.Headers)+3), Attempt: 1}
	switch strings.ToLower(enc) {
	case "base64":
		b, err := base64.StdEncoding.DecodeString(e.Body)
		if err != nil {
			return received{}, fmt.Errorf("%w: body: %w", ErrMalformed, err)
		}
		m.Body = b
	case "", "utf-8", "utf8":
		m.Body = []byte(e.Body)
	default:
		return received{}, fmt.Errorf("%w: body_encoding %q", ErrMalformed, enc)
	}
	var typed []string
	for k, v := range e.Headers {
		var s string
		if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
			m.Headers[k] = s
			continue
		}
		m.Headers[k] = string(v)
		typed = append(typed, k)
	}
	if len(typed) > 0 {
		slices.Sort(typed)
		m.Headers[hdrTyped] = strings.Join(typed, ",")
	}
	if e.ContentType != nil {
		m.Headers[hdrContentType] = *e.ContentType
	}
	if e.ContentEncoding != nil {
		m.Headers[hdrContentEncoding] = *e.ContentEncoding
	}
	var corr string
	if unmarshalProp(e.Properties, "correlation_id", &corr); corr != "" {
		m.Headers[bus.HeaderCorrelationID] = corr
	}
	unmarshalProp(e.Properties, propKey, &m.Key)
	unmarshalProp(e.Properties, propID, &m.ID)
	if m.ID == "" {
		if id, ok := m.Headers["id"]; ok && id != "" && !slices.Contains(typed, "id") {
			m.ID = id
		} else if corr != "" {
			m.ID = corr
		} else {
			m.ID = r.tag
		}
	}
	var ns int64
	if unmarshalProp(e.Properties, propPublished, &ns); ns > 0 {
		m.PublishedAt = time.Unix(0, ns)
	} else if unmarshalProp(e.Properties, wire.PublishedOld, &ns); ns > 0 {
		m.PublishedAt = time.Unix(0, ns)
	}
	var attempt int
	unmarshalProp(e.Properties, propAttempt, &attempt)
	var di deliveryInfo
	unmarshalProp(e.Properties, "delivery_info", &di)
	switch {
	case attempt > 0:
		m.Attempt = attempt
	case di.Redelivered || string(e.Headers["redelivered"]) == "true":
		// Restored by kombu, which does not count deliveries.
		m.Attempt = 2
	}
	var pri float64
	if unmarshalProp(e.Properties, "priority", &pri); pri > 0 {
		r.priority = int(min(pri, 9))
	}
	r.msg = m
	return r, nil
}

func unmarshalProp(props map[string]json.RawMessage, k string, dst any) error {
	v, ok := props[k]
	if !ok || string(v) == "null" {
		return nil
	}
	return json.Unmarshal(v, dst)
}

// redelivery returns raw, a stored envelope, marked for its next delivery
// as kombu marks a restored message (delivery_info.redelivered), with the
// attempt number of that delivery. Every other field is kept as it was.
func redelivery(raw []byte, attempt int) ([]byte, error) {
	var e map[string]json.RawMessage
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var props map[string]json.RawMessage
	if err := json.Unmarshal(e["properties"], &props); err != nil || props == nil {
		return nil, fmt.Errorf("%w: properties", ErrMalformed)
	}
	var di map[string]json.RawMessage
	if err := unmarshalProp(props, "delivery_info", &di); err != nil {
		return nil, fmt.Errorf("%w: delivery_info: %w", ErrMalformed, err)
	}
	if di == nil {
		di = map[string]json.RawMessage{}
	}
	di["redelivered"] = json.RawMessage("true")
	props["delivery_info"] = mustJSON(di)
	props[propAttempt] = json.RawMessage(strconv.Itoa(attempt))
	e["properties"] = mustJSON(props)
	return json.Marshal(e)
}

// priorityStep maps a priority to kombu's sub-queue step, as kombu's
// priority_steps [0, 3, 6, 9] do.
func priorityStep(p int) int {
	switch {
	case p >= 9:
		return 9
	case p >= 6:
		return 6
	case p >= 3:
		return 3
	}
	return 0
}
