package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 30*time.Second, "bound on the round trip")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: omnibus doctor URL

Connects to the broker, publishes a message to a new topic and receives it,
then prints the broker's version, the client, the durability settings and
what the round trip took. The topic is deleted afterwards.

flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr(fs, "want one URL")
	}
	rawURL, err := brokerURL(pos[0])
	if err != nil {
		return usageErr(fs, "%v", err)
	}
	u, err := bus.ParseURL(rawURL)
	if err != nil {
		return err
	}
	out := func(k, v string) { fmt.Fprintf(stdout, "%-14s %s\n", k+":", v) }
	out("broker URL", u.Redacted())

	t0 := time.Now()
	b, err := openBroker(ctx, rawURL)
	if err != nil {
		out("connect", "FAILED: "+err.Error())
		return err
	}
	defer b.Close()
	out("connect", "ok in "+time.Since(t0).Round(time.Microsecond).String())

	info := bench.Probe(ctx, bench.Target{Name: targetName(u.Scheme), URL: rawURL})
	out("broker", info.Product+" "+info.Version)
	if info.VersionSource != "" {
		out("version from", info.VersionSource)
	}
	c := info.Client
	client := "omnibus " + c.OmnibusVersion + ", " + c.Adapter
	if c.Library != "" {
		client += ", " + c.Library + " " + c.LibraryVersion
	}
	out("client", client)
	out("durability", info.Durability.Summary)
	for _, k := range slices.Sorted(maps.Keys(info.Durability.Settings)) {
		out("  "+k, info.Durability.Settings[k])
	}
	if fr, ok := b.(bus.FeatureReporter); ok {
		f := fr.Features()
		limit := "none"
		if f.MaxMessageSize > 0 {
			limit = fmt.Sprintf("%d bytes", f.MaxMessageSize)
		}
		out("features", fmt.Sprintf("persistent=%v ordered-per-key=%v nack-delay=%v max-message-size=%s",
			f.Persistent, f.OrderedPerKey, f.NackDelay, limit))
	}
	for _, n := range info.Notes {
		out("note", n)
	}

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	topic := "omnibus-doctor-" + hex.EncodeToString(rnd[:])
	defer func() {
		if err := bench.Cleanup(context.WithoutCancel(ctx), rawURL, topic, bus.DefaultGroup); err != nil {
			out("cleanup", err.Error())
		}
	}()
	rtt, pubTime, err := roundTrip(ctx, b, topic, *timeout)
	if err != nil {
		out("round trip", "FAILED: "+err.Error())
		return fmt.Errorf("round trip on %s: %w", topic, err)
	}
	out("round trip", fmt.Sprintf("ok: published in %v, received after %v", pubTime.Round(time.Microsecond), rtt.Round(time.Microsecond)))
	return nil
}

// roundTrip publishes one message to a fresh topic and receives it.
func roundTrip(ctx context.Context, b bus.Broker, topic string, timeout time.Duration) (rtt, pub time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sub, err := b.Subscribe(ctx, topic, bus.SubscribeOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Close()
	body := []byte("omnibus doctor " + topic)
	m := bus.NewMessage(body)
	t0 := time.Now()
	if err := b.Publish(ctx, topic, m); err != nil {
		return 0, 0, fmt.Errorf("publish: %w", err)
	}
	pub = time.Since(t0)
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			return 0, pub, fmt.Errorf("receive: %w", err)
		}
		got := d.Message()
		if err := d.Ack(ctx); err != nil {
			return 0, pub, fmt.Errorf("ack: %w", err)
		}
		if got.ID == m.ID {
			if !bytes.Equal(got.Body, body) {
				return 0, pub, fmt.Errorf("message %s came back with another body", m.ID)
			}
			return time.Since(t0), pub, nil
		}
	}
}
