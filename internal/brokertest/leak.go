package brokertest

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// NoSecretInPrint fails the test when secret shows in v printed with %v,
// %+v, %#v or %s, or logged by slog's text and JSON handlers.
func NoSecretInPrint(t testing.TB, secret string, v any) {
	t.Helper()
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "v", v)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("options", "v", v)
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", v), "%+v": fmt.Sprintf("%+v", v), "%#v": fmt.Sprintf("%#v", v),
		"%s": fmt.Sprintf("%s", v), "slog": logs.String(),
	} {
		if strings.Contains(s, secret) {
			t.Errorf("%T printed with %s shows the secret: %s", v, what, s)
		}
	}
}
