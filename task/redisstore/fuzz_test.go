package redisstore

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/task"
)

// FuzzDecode: any bytes under a state's key decode without panicking,
// into a state with a known status or an ErrBadState.
func FuzzDecode(f *testing.F) {
	good, _ := json.Marshal(task.State{ID: "a", Task: "t", Status: task.Success, Result: []byte(`{"n":1}`), Attempt: 1, Updated: time.Unix(1, 0)})
	for _, s := range []string{string(good), `{}`, `{"status":"BOGUS"}`, `{"status":"SUCCESS","result":[}`, `null`, "\xff", `{"attempt":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decode("id", b)
		if err != nil {
			if !errors.Is(err, ErrBadState) || st.ID != "id" {
				t.Fatalf("%q: %+v, %v; want ErrBadState", b, st, err)
			}
			return
		}
		switch st.Status {
		case task.Pending, task.Started, task.Retry, task.Success, task.Failure:
		default:
			t.Fatalf("%q decoded with status %q", b, st.Status)
		}
	})
}
