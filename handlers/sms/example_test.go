package sms_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/omnibus-mq/omnibus/adapters/memory"
	"github.com/omnibus-mq/omnibus/handlers/sms"
	"github.com/omnibus-mq/omnibus/task"
)

func Example() {
	ctx := context.Background()
	broker := memory.New(memory.Options{})
	defer broker.Close()

	svc, err := sms.New(sms.Config{Store: sms.NewMemoryStore(), Publisher: broker})
	if err != nil {
		panic(err)
	}

	// The worker's provider stands in for a gateway: it hands the text to
	// the "user" below.
	inbox := make(chan string, 1)
	w, err := task.NewWorker(broker, task.WorkerConfig{})
	if err != nil {
		panic(err)
	}
	sms.Register(w, sms.ProviderFunc(func(ctx context.Context, phone, text string) error {
		inbox <- text
		return nil
	}))
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	const phone = "+15555550100"
	if _, err := svc.Request(ctx, phone); err != nil {
		panic(err)
	}
	_, err = svc.Request(ctx, phone)
	fmt.Println("second request refused:", errors.Is(err, sms.ErrTooSoon))

	code := regexp.MustCompile(`\d{6}`).FindString(<-inbox)
	fmt.Println("wrong code:", svc.Verify(ctx, phone, "not-it"))
	fmt.Println("right code:", svc.Verify(ctx, phone, code))
	fmt.Println("used again:", svc.Verify(ctx, phone, code))
	// Output:
	// second request refused: true
	// wrong code: sms: wrong code; 4 attempt(s) left
	// right code: <nil>
	// used again: sms: no code for this phone
}
