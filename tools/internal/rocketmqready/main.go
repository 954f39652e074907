// Command rocketmqready waits until a RocketMQ cluster replicates: the
// name server lists -groups broker groups, each with a master and -slaves
// slaves, and a probe message sent to every writable queue of a probe
// topic is acknowledged (with brokerRole=SYNC_MASTER, a master answers a
// send only once its slave has the message, so an answer on every queue
// means every group replicates).
//
// scripts/clusters runs it inside the client namespace after starting the
// nodes. Exit status 0 means the cluster replicates; 1 means the timeout
// passed first. On success it prints one line describing the groups.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
	"github.com/omnibus-mq/omnibus/bus"
)

// probeTopic is the topic the probe messages go to.
const probeTopic = "omnibus-ready"

func main() {
	namesrv := flag.String("namesrv", "127.0.0.1:9876", "name server address")
	groups := flag.Int("groups", 1, "broker groups the cluster must list")
	slaves := flag.Int("slaves", 0, "slaves each broker group must list")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var last error
	for {
		desc, err := check(ctx, *namesrv, *groups, *slaves)
		if err == nil {
			fmt.Println(desc)
			return
		}
		last = err
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "rocketmqready: %s: not ready after %s: %v\n", *namesrv, *timeout, last)
			os.Exit(1)
		case <-time.After(time.Second):
		}
	}
}

// check returns a description of the cluster when it replicates.
func check(ctx context.Context, namesrv string, wantGroups, wantSlaves int) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := rocketmq.New(cctx, rocketmq.Options{
		NameServers:    []string{namesrv},
		RequestTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return "", err
	}
	defer b.Close()
	gs, err := b.Cluster(cctx)
	if err != nil {
		return "", err
	}
	var complete []string
	for _, g := range gs {
		if g.Master() != "" && len(g.Addrs)-1 >= wantSlaves {
			ids := make([]int, 0, len(g.Addrs))
			for id := range g.Addrs {
				ids = append(ids, id)
			}
			sort.Ints(ids)
			var nodes []string
			for _, id := range ids {
				nodes = append(nodes, fmt.Sprintf("%d=%s", id, g.Addrs[id]))
			}
			complete = append(complete, g.Name+" {"+strings.Join(nodes, " ")+"}")
		}
	}
	if len(complete) < wantGroups {
		return "", fmt.Errorf("%d of %d broker groups have a master and %d slaves: %v", len(complete), wantGroups, wantSlaves, gs)
	}
	// Keyless messages take the topic's queues in turn: twice as many
	// sends as queues reach every queue.
	n := 2 * wantGroups * rocketmq.DefaultQueues
	for i := range n {
		m := bus.NewMessage([]byte("ready"))
		if err := b.Publish(cctx, probeTopic, m); err != nil {
			return "", fmt.Errorf("probe send %d of %d: %w", i+1, n, err)
		}
	}
	return fmt.Sprintf("%d broker groups: %s; %d probe sends acknowledged", len(complete), strings.Join(complete, ", "), n), nil
}
