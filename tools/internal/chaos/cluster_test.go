package chaos_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
	"github.com/omnibus-mq/omnibus/tools/internal/chaos"
)

// Environment of the cluster chaos run; scripts/cluster-chaos sets it.
const (
	// clusterFamilyEnv: kafka, redis, rabbitmq or rocketmq.
	clusterFamilyEnv = "OMNIBUS_CLUSTER_FAMILY"
	// clusterURLEnv: the cluster's URL (scripts/clusters url FAMILY; for
	// redis its first line, the Redis Cluster's).
	clusterURLEnv = "OMNIBUS_CLUSTER_URL"
	// clusterScenariosEnv: comma-separated scenarios (default all).
	clusterScenariosEnv = "OMNIBUS_CLUSTER_CHAOS"
	// clusterTimesEnv: warm-up, fault and after-heal times, as
	// "10s,15s,10s" (the default).
	clusterTimesEnv = "OMNIBUS_CLUSTER_CHAOS_TIMES"
	// clusterRateEnv: messages per second (default 200).
	clusterRateEnv = "OMNIBUS_CLUSTER_CHAOS_RATE"
)

// TestClusterChaos runs the cluster scenarios on the cluster that
// OMNIBUS_CLUSTER_FAMILY and OMNIBUS_CLUSTER_URL name, from inside the
// client namespace of scripts/clusters (scripts/cluster-chaos starts it
// there). Without them it is skipped: it needs such a cluster.
func TestClusterChaos(t *testing.T) {
	family, raw := os.Getenv(clusterFamilyEnv), os.Getenv(clusterURLEnv)
	ctlPath := os.Getenv(brokertest.ClusterCtlEnv)
	if family == "" || raw == "" || ctlPath == "" {
		t.Skipf("needs a cluster of scripts/clusters: %s, %s and %s (scripts/cluster-chaos sets them)",
			clusterFamilyEnv, clusterURLEnv, brokertest.ClusterCtlEnv)
	}
	e := clusterEnv(t, family, raw, ctlPath)
	want := map[string]bool{}
	if v := os.Getenv(clusterScenariosEnv); v != "" {
		for _, s := range strings.Split(v, ",") {
			want[strings.TrimSpace(s)] = true
		}
	}
	var results []chaos.ClusterResult
	unknown := maps.Clone(want)
	for _, s := range chaos.ClusterScenarios() {
		if len(want) > 0 && !want[s.Name] {
			continue
		}
		delete(unknown, s.Name)
		t.Run(s.Name, func(t *testing.T) {
			if s.Weak && e.WeakURL == "" {
				t.Skipf("%s: no weak settings on this cluster", family)
			}
			if s.Remote && e.RemoteURL == "" {
				t.Skipf("%s: no consumer cut off alone here", family)
			}
			t.Cleanup(func() {
				// Whatever happened, the next scenario starts whole.
				ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
				defer cancel()
				if err := e.Ctl(ctx, "heal"); err != nil {
					t.Errorf("healing: %v", err)
				}
			})
			r := chaos.RunCluster(context.Background(), e, s)
			results = append(results, r)
			t.Logf("%s\n%s", s.What, chaos.ClusterTable([]chaos.ClusterResult{r}))
			if notes := chaos.Notes([]chaos.Result{r.Result}); notes != "" {
				t.Log(notes)
			}
			if r.Err != "" {
				t.Errorf("%s\n%s", r.Err, logs())
			}
		})
	}
	for name := range unknown {
		t.Errorf("%s names no cluster scenario %q", clusterScenariosEnv, name)
	}
	if len(results) == 0 {
		return
	}
	table := chaos.ClusterTable(results)
	t.Logf("cluster chaos results:\n%s", table)
	if dir := os.Getenv(resultsEnv); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		var b strings.Builder
		fmt.Fprintf(&b, "# Cluster chaos run %s: %s\n\n", now.Format(time.RFC3339), family)
		fmt.Fprintf(&b, "%s at %d msg/s, warm-up %v, fault %v, after the heal %v; %s, %d CPUs.\n\n",
			redact(raw), e.Rate, e.Warm, e.Fault, e.After, runtime.Version(), runtime.NumCPU())
		b.WriteString(table)
		b.WriteString("\n")
		var plain []chaos.Result
		for _, r := range results {
			plain = append(plain, r.Result)
		}
		b.WriteString(chaos.Notes(plain))
		path := filepath.Join(dir, "cluster-"+family+"-"+now.Format("20060102-150405")+".md")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\n%s\nwritten to %s\n", table, path)
	}
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}

// clusterEnv is the family's URLs, its leader lookup and the run's
// times.
func clusterEnv(t *testing.T, family, raw, ctlPath string) *chaos.ClusterEnv {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", clusterURLEnv, err)
	}
	if err := brokertest.CheckRoutes(hosts(u)...); err != nil {
		t.Fatal(err)
	}
	e := &chaos.ClusterEnv{
		Family: family,
		Rate:   200,
		Warm:   10 * time.Second, Fault: 15 * time.Second, After: 10 * time.Second,
		Drain: 90 * time.Second,
		Logf:  t.Logf,
		Ctl: func(ctx context.Context, args ...string) error {
			_, err := run(ctx, ctlPath, args...)
			return err
		},
		ChildVia:  []string{ctlPath, "exec", "--client", "2"},
		ChildArgs: []string{"-test.run=^$"},
	}
	if v := os.Getenv(clusterRateEnv); v != "" {
		if e.Rate, err = strconv.Atoi(v); err != nil || e.Rate < 10 {
			t.Fatalf("%s=%q: want messages per second, at least 10", clusterRateEnv, v)
		}
	}
	if v := os.Getenv(clusterTimesEnv); v != "" {
		var ds []time.Duration
		for _, f := range strings.Split(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want three durations, warm-up,fault,after", clusterTimesEnv, v)
			}
			ds = append(ds, d)
		}
		if len(ds) != 3 {
			t.Fatalf("%s=%q: want three durations, warm-up,fault,after", clusterTimesEnv, v)
		}
		e.Warm, e.Fault, e.After = ds[0], ds[1], ds[2]
	}
	with := func(set map[string]string) string {
		w := *u
		q := w.Query()
		for k, v := range set {
			q.Set(k, v)
		}
		w.RawQuery = q.Encode()
		return w.String()
	}
	switch family {
	case "kafka":
		// One partition: its leader is the node whose loss matters.
		e.URL = with(map[string]string{"partitions": "1"})
		// The negative control: acknowledged by the leader alone, and
		// a leader without its followers goes on acknowledging.
		e.WeakURL = with(map[string]string{"partitions": "1", "acks": "leader", "min_insync_replicas": "1"})
		e.Leader = kafkaLeader
		// Four partitions shared by the two consumers; the cut-off one
		// leaves the group after its 10 s session timeout.
		e.RemoteURL, e.RemoteFault = with(map[string]string{"partitions": "4"}), 20*time.Second
	case "redis":
		e.URL = with(map[string]string{"wait": "1"})
		// The negative control: a write counts once the master has it.
		e.WeakURL = with(map[string]string{"wait": "0"})
		e.Leader = redisMaster
		// The cut-off consumer's deliveries are claimed by the other
		// after 5 s.
		e.RemoteURL = with(map[string]string{"wait": "1", "visibility_timeout": "5s", "claim_interval": "500ms"})
		e.RemoteFault = 15 * time.Second
	case "rabbitmq":
		e.URL = raw
		// Heartbeats every 3 s: the cluster closes the cut-off
		// consumer's connection, and requeues what it held, after two
		// missed ones.
		e.RemoteURL, e.RemoteFault = with(map[string]string{"heartbeat": "3"}), 20*time.Second
		e.Leader = func(ctx context.Context, _, topic, group string) (string, error) {
			out, err := run(ctx, ctlPath, "leader", "rabbitmq", topic+"."+group)
			return strings.TrimSpace(out), err
		}
	case "rocketmq":
		e.URL = raw
		// Topics live on both broker groups; broker-a's master is the
		// one hit. No consumer is cut off alone: the brokers drop a
		// silent consumer only after two minutes.
		e.Leader = func(context.Context, string, string, string) (string, error) { return "a0", nil }
	default:
		t.Fatalf("%s=%q: want kafka, redis, rabbitmq or rocketmq", clusterFamilyEnv, family)
	}
	return e
}

// hosts are the host:port pairs of a broker URL, the brokers parameter
// included.
func hosts(u *url.URL) []string {
	hs := strings.Split(u.Host, ",")
	if more := u.Query().Get("brokers"); more != "" {
		hs = append(hs, strings.Split(more, ",")...)
	}
	return hs
}

// run runs a program and returns its standard output; its error carries
// the standard error.
func run(ctx context.Context, prog string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// kafkaLeader is the node (its node.id, 1-3 in scripts/clusters) that
// leads the topic's first partition.
func kafkaLeader(ctx context.Context, raw, topic, _ string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(hosts(u)...))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return "", err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return "", fmt.Errorf("kafka: no metadata of %s: %v", topic, td.Err)
	}
	p, ok := td.Partitions[0]
	if !ok || p.Leader < 0 {
		return "", fmt.Errorf("kafka: %s has no leader of partition 0", topic)
	}
	return strconv.Itoa(int(p.Leader)), nil
}

// redisMaster is the Redis Cluster node (cN, at 10.77.0.2N) that serves
// the topic's slot.
func redisMaster(ctx context.Context, raw, topic, _ string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: hosts(u)})
	defer rc.Close()
	m, err := rc.MasterForKey(ctx, topic)
	if err != nil {
		return "", err
	}
	host, _, err := net.SplitHostPort(m.Options().Addr)
	if err != nil {
		return "", err
	}
	var last int
	if _, err := fmt.Sscanf(host, "10.77.0.%d", &last); err != nil || last < 21 || last > 26 {
		return "", fmt.Errorf("redis: the master of %s, %s, is not a cluster node of scripts/clusters", topic, host)
	}
	return "c" + strconv.Itoa(last-20), nil
}
