package chaos

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// CaptureLogs sends this process's slog default logger and go-redis's
// logger into a buffer of the last n lines, which the returned function
// reads. The adapters log every connection failure and retry, so that a
// broker killed under load writes hundreds of lines; they belong in the
// diagnostics of a failure, not in the table's output.
func CaptureLogs(n int) func() string {
	r := &ring{max: n}
	slog.SetDefault(slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelInfo})))
	redis.SetLogger(redisLogger{r})
	return func() string { return "---- last log lines of the test process\n" + r.String() }
}

type redisLogger struct{ r *ring }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(l.r, "go-redis: "+format+"\n", v...)
}
