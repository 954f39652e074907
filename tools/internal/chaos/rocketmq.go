package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/omnibus-mq/omnibus/adapters/rocketmq"
)

// RocketMQVersion returns the RocketMQ version whose jars scripts/brokers
// installed under stateDir (OMNIBUS_BROKERS_DIR, by default
// <repo>/.brokers), in stateDir/rocketmq/<version>/lib. With several
// installed, version picks one ("" takes the newest by name).
func RocketMQVersion(stateDir, version string) (string, error) {
	marks, _ := filepath.Glob(filepath.Join(stateDir, "rocketmq", "*", "lib", ".complete"))
	sort.Strings(marks)
	for i := len(marks) - 1; i >= 0; i-- {
		v := filepath.Base(filepath.Dir(filepath.Dir(marks[i])))
		if version == "" || v == version {
			return v, nil
		}
	}
	return "", fmt.Errorf("no RocketMQ jars under %s/rocketmq/*/lib (scripts/brokers up rocketmq installs them; OMNIBUS_BROKERS_DIR names another state dir)", stateDir)
}

// rocketmqLockTTL is how long the chaos broker keeps a consumer's queue
// lock without renewal (the broker's default is a minute). A consumer
// process that is SIGKILLed keeps its queues locked that long; the
// adapter renews its locks every rebalance_interval.
const rocketmqLockTTL = 6 * time.Second

// RocketMQ is a RocketMQ name server and broker of the harness's own, on
// ports and in a directory of their own. Both JVMs are started through
// `scripts/brokers run rocketmq namesrv|broker`, so they run with the
// configuration and the JVM options of the shared instance that
// scripts/brokers starts (flushDiskType=SYNC_FLUSH among them: a send is
// answered once the message is on disk), but as child processes of the
// harness, which SIGKILLs and restarts the broker itself.
//
// Two settings differ from the shared instance: the ports and the
// lifetime of the queue locks (rocketmqLockTTL instead of a minute).
type RocketMQ struct {
	script   string // scripts/brokers
	stateDir string // where the jars are
	version  string
	dir      string
	nsPort   int
	port     int // the broker's; it also listens on port-2 and port+1
	runs     int
	ns, b    *proc
}

// NewRocketMQ prepares a RocketMQ instance with its files under dir,
// running the jars of version under stateDir (see RocketMQVersion) with
// the scripts/brokers at script and the java found in PATH.
func NewRocketMQ(dir, script, stateDir, version string) (*RocketMQ, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return nil, fmt.Errorf("java not installed (scripts/brokers up rocketmq installs it): %w", err)
	}
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("rocketmq: %w", err)
	}
	// Name server at base, broker at base+3 with its fast port (-2) and
	// HA port (+1).
	base, err := freePortBlock(5)
	if err != nil {
		return nil, fmt.Errorf("rocketmq: %w", err)
	}
	return &RocketMQ{script: script, stateDir: stateDir, version: version, dir: dir, nsPort: base, port: base + 3}, nil
}

// freePortBlock returns the first of n consecutive loopback ports that
// were free a moment ago, below the kernel's usual range of ephemeral
// ports (32768-60999), so that no outgoing connection takes one of them
// while the broker is down.
func freePortBlock(n int) (int, error) {
	const lo, hi = 20000, 32000
	for range 100 {
		base := lo + rand.IntN(hi-lo-n)
		var ls []net.Listener
		ok := true
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no %d consecutive free ports between %d and %d", n, lo, hi)
}

// Name implements Instance.
func (r *RocketMQ) Name() string { return "rocketmq" }

// NameServer is the name server's host:port.
func (r *RocketMQ) NameServer() string { return "127.0.0.1:" + strconv.Itoa(r.nsPort) }

// Addr is the broker's host:port.
func (r *RocketMQ) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL implements Instance: offsets stored every 200ms, queues re-divided
// (and locks renewed) every 500ms.
func (r *RocketMQ) URL() string {
	return "rocketmq://" + r.NameServer() + "?queues=4&commit_interval=200ms&rebalance_interval=500ms" +
		"&poll_timeout=2s&dial_timeout=2s&request_timeout=5s&drain_timeout=5s"
}

func (r *RocketMQ) cmd(role string) *exec.Cmd {
	cmd := exec.Command(r.script, "run", "rocketmq", role)
	cmd.Env = append(os.Environ(),
		"OMNIBUS_BROKERS_DIR="+r.stateDir,
		"OMNIBUS_ROCKETMQ_VERSION="+r.version,
		"OMNIBUS_ROCKETMQ_DIR="+r.dir,
		"OMNIBUS_ROCKETMQ_NAMESRV_PORT="+strconv.Itoa(r.nsPort),
		"OMNIBUS_ROCKETMQ_BROKER_PORT="+strconv.Itoa(r.port),
		"OMNIBUS_ROCKETMQ_JAVA_OPTS=-Drocketmq.broker.rebalance.lockMaxLiveTime="+strconv.FormatInt(rocketmqLockTTL.Milliseconds(), 10),
	)
	return cmd
}

func (r *RocketMQ) nsLog() string { return filepath.Join(r.dir, "namesrv.out") }

func (r *RocketMQ) brokerLog() string {
	return filepath.Join(r.dir, "broker-"+strconv.Itoa(r.runs)+".out")
}

// Start implements Instance: the name server (unless it runs), then the
// broker, on the same ports and data as before. It returns once the name
// server lists the broker.
func (r *RocketMQ) Start(ctx context.Context) error {
	if r.b != nil && !r.b.exited() {
		return errors.New("rocketmq: the broker is already running")
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("rocketmq: %w", err)
	}
	if r.ns == nil || r.ns.exited() {
		p, err := startProc(r.cmd("namesrv"), r.nsLog())
		if err != nil {
			return fmt.Errorf("rocketmq: name server: %w", err)
		}
		r.ns = p
		if err := poll(ctx, p, "rocketmq name server", func(ctx context.Context) error {
			c, err := r.client(ctx) // New checks that the name server answers
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			r.ns.kill(20 * time.Second)
			return fmt.Errorf("rocketmq: %w\n%s", err, r.Logs())
		}
	}
	r.runs++
	p, err := startProc(r.cmd("broker"), r.brokerLog())
	if err != nil {
		return fmt.Errorf("rocketmq: broker: %w", err)
	}
	r.b = p
	if err := poll(ctx, p, "rocketmq broker", r.ready); err != nil {
		r.b.kill(20 * time.Second)
		return fmt.Errorf("rocketmq: %w\n%s", err, r.Logs())
	}
	return nil
}

// ready: the broker says it booted (it has registered with the name
// server by then) and the name server lists it as a master that answers.
func (r *RocketMQ) ready(ctx context.Context) error {
	b, err := os.ReadFile(r.brokerLog())
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte("boot success")) {
		return errors.New(`no "boot success" in its output yet`)
	}
	c, err := r.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	masters, err := c.Describe(ctx)
	if err != nil {
		return err
	}
	for _, m := range masters {
		if m.Addr == r.Addr() {
			return nil
		}
	}
	return fmt.Errorf("the name server does not list %s yet", r.Addr())
}

// client connects the adapter to this instance's name server.
func (r *RocketMQ) client(ctx context.Context) (*rocketmq.Broker, error) {
	return rocketmq.New(ctx, rocketmq.Options{NameServers: []string{r.NameServer()}})
}

// Kill implements Instance: SIGKILL to the broker's JVM (the name server
// keeps running, as a separate process would in production).
func (r *RocketMQ) Kill() error { return r.b.kill(20 * time.Second) }

// Close implements Instance.
func (r *RocketMQ) Close() error {
	err := errors.Join(r.b.kill(20*time.Second), r.ns.kill(20*time.Second))
	if rerr := os.RemoveAll(r.dir); err == nil {
		err = rerr
	}
	return err
}

// Logs implements Instance: the error lines of the broker's logs, their
// last lines, and the end of the processes' output.
func (r *RocketMQ) Logs() string {
	logs := filepath.Join(r.dir, "home", "logs", "rocketmqlogs")
	var errs []string
	for _, name := range []string{"broker.log", "store.log", "remoting.log"} {
		b, _ := os.ReadFile(filepath.Join(logs, name))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " ERROR ") {
				errs = append(errs, name+": "+l)
			}
		}
	}
	if len(errs) > 10 {
		errs = errs[len(errs)-10:]
	}
	return "---- errors in " + logs + "\n" + strings.Join(errs, "\n") + "\n" +
		tail(filepath.Join(logs, "broker.log"), 20) + "\n" + tail(r.brokerLog(), 5) + "\n" + tail(r.nsLog(), 5)
}
