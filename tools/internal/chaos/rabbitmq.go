package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitServer is Debian's wrapper: run by root, it switches to the
// rabbitmq user (and so to its Erlang cookie), keeping the environment.
const rabbitServer = "/usr/sbin/rabbitmq-server"

// RabbitMQ is a RabbitMQ node of the harness's own, beside any other node
// on the machine: its own node name, AMQP and distribution ports, Mnesia
// and log directories, configuration and no plugins. Messages are
// persistent and queues durable, so a message RabbitMQ confirmed is on
// disk and survives SIGKILL of the node.
type RabbitMQ struct {
	dir        string
	node       string
	port, dist int
	uid, gid   int
	p          *proc
}

// NewRabbitMQ prepares a node with its files under dir, which must be
// reachable for the rabbitmq user (not under a 0700 directory). It needs
// root, as Debian's rabbitmq-server wrapper does.
func NewRabbitMQ(dir string) (*RabbitMQ, error) {
	if _, err := os.Stat(rabbitServer); err != nil {
		return nil, fmt.Errorf("rabbitmq-server not installed (scripts/brokers up rabbitmq installs it): %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("starting a RabbitMQ node needs root (Debian's %s switches to the rabbitmq user)", rabbitServer)
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	r := &RabbitMQ{dir: dir, node: "chaos-" + hex.EncodeToString(b[:]) + "@localhost",
		port: ports[0], dist: ports[1], uid: uid, gid: gid}
	if err := r.prepare(); err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	return r, nil
}

func (r *RabbitMQ) prepare() error {
	for _, d := range []string{r.dir, filepath.Join(r.dir, "mnesia"), filepath.Join(r.dir, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, r.uid, r.gid); err != nil {
			return err
		}
	}
	files := map[string]string{
		"rabbitmq.conf":   fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\n", r.port),
		"enabled_plugins": "[].\n",
		// Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the
		// shared node.
		"rabbitmq-env.conf": "ERL_EPMD_ADDRESS=127.0.0.1\n" +
			"SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n" +
			"ulimit -S -n \"$(ulimit -H -n)\" 2>/dev/null || true\n",
	}
	for name, content := range files {
		path := filepath.Join(r.dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Name implements Instance.
func (r *RabbitMQ) Name() string { return "rabbitmq" }

// URL implements Instance.
func (r *RabbitMQ) URL() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/?dial_timeout=3s", r.port)
}

func (r *RabbitMQ) pidFile() string { return filepath.Join(r.dir, "rabbit.pid") }

// Start implements Instance.
func (r *RabbitMQ) Start(ctx context.Context) error {
	if r.p != nil && !r.p.exited() {
		return fmt.Errorf("rabbitmq: already running")
	}
	os.Remove(r.pidFile())
	cmd := exec.Command(rabbitServer)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+r.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(r.dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.dir, "rabbitmq-env.conf"),
		"RABBITMQ_PID_FILE="+r.pidFile(),
	)
	p, err := startProc(cmd, filepath.Join(r.dir, "start.log"))
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	r.p = p
	if err := poll(ctx, p, "rabbitmq node "+r.node, r.handshake); err != nil {
		r.Kill()
		return fmt.Errorf("rabbitmq: %w\n%s", err, r.Logs())
	}
	return nil
}

func (r *RabbitMQ) handshake(ctx context.Context) error {
	c, err := amqp.DialConfig(r.URL()[:strings.IndexByte(r.URL(), '?')], amqp.Config{
		Dial: amqp.DefaultDial(2 * time.Second),
	})
	if err != nil {
		return err
	}
	return c.Close()
}

// beam returns the pid of the node's Erlang VM.
func (r *RabbitMQ) beam() (int, bool) {
	b, err := os.ReadFile(r.pidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// Kill implements Instance: SIGKILL to the node's Erlang VM.
func (r *RabbitMQ) Kill() error {
	if r.p == nil {
		return nil
	}
	if pid, ok := r.beam(); ok {
		if err := killPid(pid, 10*time.Second); err != nil {
			return fmt.Errorf("rabbitmq: %w", err)
		}
	}
	// The wrapper's shells exit with the VM; the group is killed in case
	// the VM never wrote its pid file.
	return r.p.kill(10 * time.Second)
}

// Close implements Instance.
func (r *RabbitMQ) Close() error {
	err := r.Kill()
	if rerr := os.RemoveAll(r.dir); err == nil {
		err = rerr
	}
	return err
}

// Logs implements Instance.
func (r *RabbitMQ) Logs() string {
	logs, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	s := tail(filepath.Join(r.dir, "start.log"), 15)
	for _, l := range logs {
		s += "\n" + tail(l, 20)
	}
	return s
}
