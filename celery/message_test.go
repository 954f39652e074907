package celery

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	eta := time.Date(2026, 11, 25, 19, 31, 23, 879104000, time.UTC)
	gi := 2
	r, err := NewRequest("tasks.send_sms_code", []any{"+15550100", "4711"}, map[string]any{"lang": "en"})
	if err != nil {
		t.Fatal(err)
	}
	r.ETA = eta
	r.Expires = eta.Add(time.Minute)
	r.Retries = 1
	r.TimeLimit = 30 * time.Second
	r.SoftTimeLimit = 1500 * time.Millisecond
	r.ParentID = "p"
	r.Group = "g"
	r.GroupIndex = &gi
	r.IgnoreResult = true
	m, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.Headers["id"] != m.ID || m.Headers[bus.HeaderCorrelationID] != m.ID || m.Headers["root_id"] != m.ID {
		t.Fatalf("ids: %v", m.Headers)
	}
	for k, want := range map[string]string{
		"lang": "go", "task": "tasks.send_sms_code", "eta": "2026-11-25T19:31:23.879104+00:00",
		"retries": "1", "timelimit": "[30,1.5]", "shadow": "null", "group_index": "2", "ignore_result": "true",
		"content-type": "application/json", "content-encoding": "utf-8", "stamps": "{}",
		"argsrepr": `["+15550100","4711"]`,
	} {
		if got := m.Headers[k]; got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if got, want := string(m.Body), `[["+15550100","4711"],{"lang":"en"},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
	typed := typedNames(m.Headers)
	for _, k := range []string{"retries", "timelimit", "shadow", "group_index", "ignore_result", "stamps", "replaced_task_nesting"} {
		if !typed[k] {
			t.Errorf("%s not listed as typed in %q", k, m.Headers[HeaderTyped])
		}
	}
	for _, k := range []string{"eta", "task", "id", "argsrepr"} {
		if typed[k] {
			t.Errorf("string header %s listed as typed", k)
		}
	}

	got, err := Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Task != r.Task || !got.ETA.Equal(eta) || !got.Expires.Equal(r.Expires) ||
		got.Retries != 1 || got.TimeLimit != 30*time.Second || got.SoftTimeLimit != 1500*time.Millisecond ||
		got.ParentID != "p" || got.Group != "g" || got.GroupIndex == nil || *got.GroupIndex != 2 ||
		!got.IgnoreResult || got.Shadow != "" || got.Lang != "go" {
		t.Fatalf("decoded %+v", got)
	}
	var phone, code, lang string
	if err := got.Bind(&phone, &code); err != nil || phone != "+15550100" || code != "4711" {
		t.Fatalf("Bind: %v %q %q", err, phone, code)
	}
	if ok, err := got.Kwarg("lang", &lang); !ok || err != nil || lang != "en" {
		t.Fatalf("Kwarg: %v %v %q", ok, err, lang)
	}
	if err := got.Bind(&phone); err == nil {
		t.Fatal("Bind accepted more arguments than destinations")
	}
}

// A Celery message as a broker without typed headers hands it over: the
// values printed by Python.
func TestDecodePrintedHeaders(t *testing.T) {
	m := &bus.Message{Headers: bus.Headers{
		"lang": "py", "task": "tasks.add", "id": "abc", "shadow": "None", "eta": "2026-11-25T19:31:23+00:00",
		"expires": "None", "retries": "4", "timelimit": "[10 None]", "group_index": "None", "ignore_result": "None",
	}, Body: []byte(`[[1,2],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]`)}
	r, err := Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Retries != 4 || r.TimeLimit != 10*time.Second || r.SoftTimeLimit != 0 || r.Shadow != "" ||
		!r.Expires.IsZero() || r.GroupIndex != nil || r.IgnoreResult || r.ETA.IsZero() || len(r.Args) != 2 {
		t.Fatalf("decoded %+v", r)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := `[[],{},{}]`
	typed := func(h bus.Headers, names string) bus.Headers { h[HeaderTyped] = names; return h }
	for _, c := range []struct {
		name string
		h    bus.Headers
		body string
		want error
	}{
		{"no id", bus.Headers{"task": "t"}, good, ErrMissingHeader},
		{"no task", bus.Headers{"id": "i"}, good, ErrMissingHeader},
		{"null id", typed(bus.Headers{"id": "null", "task": "t"}, "id"), good, ErrMissingHeader},
		{"pickle", bus.Headers{"id": "i", "task": "t", "content-type": "application/x-python-serialize"}, good, ErrContentType},
		{"retries text", bus.Headers{"id": "i", "task": "t", "retries": "many"}, good, ErrBadHeader},
		{"retries list", typed(bus.Headers{"id": "i", "task": "t", "retries": "[1]"}, "retries"), good, ErrBadHeader},
		{"bad json", typed(bus.Headers{"id": "i", "task": "t", "retries": "{"}, "retries"), good, ErrBadHeader},
		{"eta", bus.Headers{"id": "i", "task": "t", "eta": "tomorrow"}, good, ErrBadHeader},
		{"timelimit", typed(bus.Headers{"id": "i", "task": "t", "timelimit": `["a",1]`}, "timelimit"), good, ErrBadHeader},
		{"task typed int", typed(bus.Headers{"id": "i", "task": "3"}, "task"), good, ErrBadHeader},
		{"body not json", bus.Headers{"id": "i", "task": "t"}, `[`, ErrBadBody},
		{"body two", bus.Headers{"id": "i", "task": "t"}, `[[],{}]`, ErrBadBody},
		{"body object", bus.Headers{"id": "i", "task": "t"}, `{"args":[]}`, ErrBadBody},
		{"args object", bus.Headers{"id": "i", "task": "t"}, `[{},{},{}]`, ErrBadBody},
		{"kwargs list", bus.Headers{"id": "i", "task": "t"}, `[[],[],{}]`, ErrBadBody},
		{"embed list", bus.Headers{"id": "i", "task": "t"}, `[[],{},[]]`, ErrBadBody},
	} {
		_, err := Decode(&bus.Message{Headers: c.h, Body: []byte(c.body)})
		if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := Decode(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil: %v", err)
	}
}

func TestEncodeRefusesEmptyTask(t *testing.T) {
	if _, err := Encode(Request{}); !errors.Is(err, bus.ErrInvalidMessage) {
		t.Fatalf("got %v", err)
	}
	if _, err := NewRequest("t", []any{func() {}}, nil); err == nil {
		t.Fatal("an argument JSON cannot encode was accepted")
	}
}

func TestWithRetry(t *testing.T) {
	r, _ := NewRequest("t", []any{1}, nil)
	m, _ := Encode(r)
	m.Headers["stamps"] = `{"x":1}`
	eta := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := withRetry(m, 2, eta)
	got, err := Decode(c)
	if err != nil {
		t.Fatal(err)
	}
	if got.Retries != 2 || !got.ETA.Equal(eta) || got.ID != m.ID || c.ID == m.ID || c.Headers["stamps"] != `{"x":1}` {
		t.Fatalf("retry %+v headers %v", got, c.Headers)
	}
	if typedNames(c.Headers)["eta"] || m.Headers["retries"] != "0" {
		t.Fatalf("eta typed or original changed: %v / %v", c.Headers, m.Headers)
	}
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// encodes again into a message it decodes to the same task.
func FuzzDecode(f *testing.F) {
	f.Add("tasks.add", "id-1", "retries,timelimit", "0", "[null,null]", "", `[[1,2],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]`)
	f.Add("t", "i", "", "None", "[None, None]", "2026-11-25T19:31:23.879104+00:00", `[[],{"a":{"b":[1]}},null]`)
	f.Add("t", "i", "retries", "1e400", `[1e400,-1]`, "2026-11-25 19:31:23", `[null,null,{}]`)
	f.Fuzz(func(t *testing.T, task, id, typedList, retries, timelimit, eta, body string) {
		m := &bus.Message{Headers: bus.Headers{
			"task": task, "id": id, HeaderTyped: typedList, "retries": retries, "timelimit": timelimit, "eta": eta,
		}, Body: []byte(body)}
		r, err := Decode(m)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if r.ID == "" || r.Task == "" {
			t.Fatalf("accepted a message without id or task: %+v", r)
		}
		if strings.Contains(typedList, "task") || strings.Contains(typedList, "id") {
			return
		}
		if !json.Valid(m.Body) {
			t.Fatalf("accepted a body that is not JSON: %q", body)
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", r, err)
		}
		r2, err := Decode(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded %+v: %v", r, err)
		}
		if r2.ID != r.ID || r2.Task != r.Task || r2.Retries != r.Retries || len(r2.Args) != len(r.Args) {
			t.Fatalf("re-encoded %+v as %+v", r, r2)
		}
	})
}

// TestDecodeTypedFastPaths: the typed header values Decode reads without
// the JSON decoder mean what the decoder would make of them, and what
// only looks like them still goes through it.
func TestDecodeTypedFastPaths(t *testing.T) {
	r, err := NewRequest("t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		retries, timelimit, ignore string
		want                       int
		hard                       time.Duration
		ignoreResult, bad          bool
	}{
		{"0", "[null, null]", "null", 0, 0, false, false},
		{"-0", "[null,null]", "false", 0, 0, false, false},
		{"17", "[30, null]", "true", 17, 30 * time.Second, true, false},
		{"1e3", "[null, null]", "null", 0, 0, false, true},
		{"1.5", "[null, null]", "null", 0, 0, false, true},
		{"12", "[null, nul]", "null", 0, 0, false, true},
	} {
		c := m.Clone()
		c.Headers["retries"], c.Headers["timelimit"], c.Headers["ignore_result"] = tc.retries, tc.timelimit, tc.ignore
		got, err := Decode(c)
		if tc.bad {
			if !errors.Is(err, ErrBadHeader) {
				t.Errorf("retries %s timelimit %s: %v, want ErrBadHeader", tc.retries, tc.timelimit, err)
			}
			continue
		}
		if err != nil || got.Retries != tc.want || got.TimeLimit != tc.hard || got.IgnoreResult != tc.ignoreResult {
			t.Errorf("retries %s timelimit %s ignore %s: %+v %v", tc.retries, tc.timelimit, tc.ignore, got, err)
		}
	}
}
