package chaos

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Redis is a redis-server of the harness's own. It appends every write to
// its append-only file and fsyncs before replying (appendfsync always), so
// an XADD that Redis confirmed survives SIGKILL: a confirmed publish is a
// durable one. (scripts/brokers runs the shared Redis with appendfsync
// everysec, where a crash of the machine may lose the last second.)
type Redis struct {
	bin  string
	dir  string
	port int
	runs int
	p    *proc
}

// NewRedis prepares a Redis instance with its data under dir, using the
// redis-server found in PATH.
func NewRedis(dir string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not installed (scripts/brokers up redis installs it): %w", err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	return &Redis{bin: bin, dir: dir, port: ports[0]}, nil
}

// Name implements Instance.
func (r *Redis) Name() string { return "redis" }

// Addr is the instance's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL implements Instance: claims of a dead consumer's work after 2s.
func (r *Redis) URL() string {
	return "redis://" + r.Addr() + "/0?visibility_timeout=2s&claim_interval=200ms&dial_timeout=2s&read_timeout=3s"
}

// Start implements Instance.
func (r *Redis) Start(ctx context.Context) error {
	if r.p != nil && !r.p.exited() {
		return fmt.Errorf("redis: already running")
	}
	r.runs++
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--dir", filepath.Join(r.dir, "data"), "--daemonize", "no",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	p, err := startProc(cmd, filepath.Join(r.dir, "start.log"))
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	r.p = p
	if err := poll(ctx, p, "redis", r.ping); err != nil {
		return fmt.Errorf("redis: %w\n%s", err, r.Logs())
	}
	return nil
}

func (r *Redis) ping(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Kill implements Instance.
func (r *Redis) Kill() error { return r.p.kill(10 * time.Second) }

// Close implements Instance.
func (r *Redis) Close() error {
	err := r.p.kill(10 * time.Second)
	if rerr := os.RemoveAll(r.dir); err == nil {
		err = rerr
	}
	return err
}

// Logs implements Instance.
func (r *Redis) Logs() string {
	return tail(filepath.Join(r.dir, "start.log"), 10) + "\n" + tail(filepath.Join(r.dir, "redis.log"), 20)
}
