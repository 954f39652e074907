package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/omnibus-mq/omnibus/bus"
)

// headerFlag collects repeated -H name=value flags.
type headerFlag bus.Headers

func (h headerFlag) String() string { return "" }

func (h headerFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want name=value", v)
	}
	h[k] = val
	return nil
}

func openBroker(ctx context.Context, rawURL string) (bus.Broker, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return bus.Open(octx, rawURL)
}

func pubCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "message key (Kafka partition key, per-key order)")
	headers := headerFlag{}
	fs.Var(headers, "H", "header name=value; repeatable")
	n := fs.Int("n", 1, "publish BODY this many times, in one batch")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: omnibus pub [flags] URL TOPIC [BODY]

Publishes BODY, or without it each line of standard input as a message of
its own, and prints the ID of each message once the broker has taken it.

flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 {
		return usageErr(fs, "want URL TOPIC [BODY]")
	}
	if *n < 1 {
		return usageErr(fs, "-n %d: want at least 1", *n)
	}
	rawURL, err := brokerURL(pos[0])
	if err != nil {
		return usageErr(fs, "%v", err)
	}
	b, err := openBroker(ctx, rawURL)
	if err != nil {
		return err
	}
	defer b.Close()
	newMsg := func(body []byte) *bus.Message {
		m := bus.NewMessage(body)
		m.Key = *key
		maps.Copy(m.Headers, headers)
		return m
	}
	publish := func(msgs []*bus.Message) error {
		if err := b.Publish(ctx, pos[1], msgs...); err != nil {
			return err
		}
		for _, m := range msgs {
			fmt.Fprintln(stdout, m.ID)
		}
		return nil
	}
	if len(pos) == 3 {
		msgs := make([]*bus.Message, *n)
		for i := range msgs {
			msgs[i] = newMsg([]byte(pos[2]))
		}
		return publish(msgs)
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	sent := 0
	for sc.Scan() {
		if err := publish([]*bus.Message{newMsg(slices.Clone(sc.Bytes()))}); err != nil {
			return err
		}
		sent++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if sent == 0 {
		fmt.Fprintln(stderr, "omnibus pub: nothing on standard input, nothing published")
	}
	return nil
}

type printed struct {
	ID          string            `json:"id"`
	Key         string            `json:"key,omitempty"`
	Attempt     int               `json:"attempt"`
	PublishedAt time.Time         `json:"published_at"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        string            `json:"body"`
}

func subCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	group := fs.String("group", bus.DefaultGroup, "consumer group")
	n := fs.Int("n", 0, "stop after this many messages; 0: run until interrupted")
	prefetch := fs.Int("prefetch", 1, "unsettled deliveries held at once")
	asJSON := fs.Bool("json", false, "print each message as a JSON object")
	timeout := fs.Duration("timeout", 0, "stop when no message arrives for this long; 0: wait forever")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: omnibus sub [flags] URL TOPIC

Prints each message of TOPIC as it arrives, one line each, and acks it.

flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageErr(fs, "want URL TOPIC")
	}
	rawURL, err := brokerURL(pos[0])
	if err != nil {
		return usageErr(fs, "%v", err)
	}
	b, err := openBroker(ctx, rawURL)
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := b.Subscribe(ctx, pos[1], bus.SubscribeOptions{Group: *group, Prefetch: *prefetch})
	if err != nil {
		return err
	}
	defer sub.Close()
	enc := json.NewEncoder(stdout)
	for got := 0; *n == 0 || got < *n; got++ {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if *timeout > 0 {
			rctx, cancel = context.WithTimeout(ctx, *timeout)
		}
		d, err := sub.Receive(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no message within %v (received %d)", *timeout, got)
			}
			return err
		}
		m := d.Message()
		if *asJSON {
			body := string(m.Body)
			if !utf8.Valid(m.Body) {
				body = strconv.Quote(string(m.Body))
			}
			err = enc.Encode(printed{ID: m.ID, Key: m.Key, Attempt: m.Attempt, PublishedAt: m.PublishedAt, Headers: m.Headers, Body: body})
		} else {
			err = printLine(stdout, m)
		}
		if err != nil {
			return err
		}
		if err := d.Ack(ctx); err != nil {
			return fmt.Errorf("ack %s: %w", m.ID, err)
		}
	}
	return nil
}

func printLine(w io.Writer, m *bus.Message) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s attempt=%d", m.PublishedAt.Format(time.RFC3339Nano), m.ID, m.Attempt)
	if m.Key != "" {
		fmt.Fprintf(&b, " key=%q", m.Key)
	}
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		fmt.Fprintf(&b, " %s=%q", k, m.Headers[k])
	}
	if utf8.Valid(m.Body) && !strings.ContainsAny(string(m.Body), "\n\r") {
		fmt.Fprintf(&b, " %s", m.Body)
	} else {
		fmt.Fprintf(&b, " %q", m.Body)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
