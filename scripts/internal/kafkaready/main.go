// Command kafkaready waits until a Kafka broker answers a metadata request.
//
// scripts/brokers runs it after starting Kafka: an open port is not enough,
// because the broker accepts connections before its controller has elected
// itself and registered the broker. Exit status 0 means a metadata request
// returned at least one broker; 1 means the timeout passed first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9092", "broker address")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var last error
	for {
		brokers, err := metadata(ctx, *addr)
		if err == nil {
			fmt.Printf("kafka metadata ok: %d broker(s), first %s:%d\n",
				len(brokers), brokers[0].Host, brokers[0].Port)
			return
		}
		last = err
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "kafkaready: %s did not answer metadata within %s: %v\n", *addr, *timeout, last)
			os.Exit(1)
		case <-time.After(time.Second):
		}
	}
}

func metadata(ctx context.Context, addr string) ([]kafka.Broker, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(dialCtx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	brokers, err := conn.Brokers()
	if err != nil {
		return nil, err
	}
	if len(brokers) == 0 {
		return nil, errors.New("metadata lists no brokers yet")
	}
	return brokers, nil
}
