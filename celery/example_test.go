package celery_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/celery"
)

// A Go worker takes over Celery's send_sms_code task. The in-process
// broker stands in for RabbitMQ opened with ?topology=queue.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b := memory.New(memory.Options{})
	defer b.Close()

	w, err := celery.NewWorker(b, "celery", celery.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	sent := make(chan struct{})
	w.Handle("tasks.send_sms_code", func(ctx context.Context, r celery.Request) error {
		var phone, code string
		if err := r.Bind(&phone, &code); err != nil {
			return bus.NoRetry(err) // a bad call cannot get better
		}
		fmt.Printf("SMS to %s: your code is %s (retries %d)\n", phone, code, r.Retries)
		close(sent)
		return nil
	})
	go w.Run(ctx)

	// What send_sms_code.delay("+15550100", "4711") does in Python.
	if _, err := celery.Delay(ctx, b, "celery", "tasks.send_sms_code", "+15550100", "4711"); err != nil {
		panic(err)
	}
	<-sent
	w.Shutdown(ctx)
	// Output: SMS to +15550100: your code is 4711 (retries 0)
}

// The message Celery 5 workers expect: typed headers travel as JSON text
// and are listed in HeaderTyped.
func ExampleEncode() {
	r, err := celery.NewRequest("tasks.add", []any{2, 3}, nil)
	if err != nil {
		panic(err)
	}
	r.ID = "4c5b1a36-3d0e-4b0a-9c55-3f1f4f5d2c11"
	m, err := celery.Encode(r)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(m.Body))
	fmt.Println(m.Headers["task"], m.Headers["retries"], m.Headers["timelimit"], m.Headers["eta"])
	fmt.Println(m.Headers[celery.HeaderTyped])
	// Output:
	// [[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]
	// tasks.add 0 [null,null] null
	// shadow,eta,expires,group,group_index,retries,timelimit,parent_id,ignore_result,replaced_task_nesting,stamped_headers,stamps
}
