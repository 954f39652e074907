package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	kgo "github.com/segmentio/kafka-go"
)

// KafkaLib returns the directory of the Kafka broker's jars that
// scripts/brokers installed under stateDir (OMNIBUS_BROKERS_DIR, by
// default <repo>/.brokers): stateDir/kafka/<version>/lib. With several
// versions installed, version picks one ("" takes the newest by name).
func KafkaLib(stateDir, version string) (string, error) {
	marks, _ := filepath.Glob(filepath.Join(stateDir, "kafka", "*", "lib", ".complete"))
	sort.Strings(marks)
	for i := len(marks) - 1; i >= 0; i-- {
		lib := filepath.Dir(marks[i])
		if version == "" || filepath.Base(filepath.Dir(lib)) == version {
			return lib, nil
		}
	}
	return "", fmt.Errorf("no Kafka jars under %s/kafka/*/lib (scripts/brokers up kafka installs them; OMNIBUS_BROKERS_DIR names another state dir)", stateDir)
}

// Kafka is a single-node KRaft Kafka (broker and controller in one JVM) of
// the harness's own, from the jars scripts/brokers installs, with its own
// ports and log directory.
//
// Producers use acks=all, which on one node means the leader has appended
// the batch to its log, in the page cache: Kafka does not fsync per write
// (log.flush.* are left at their defaults). SIGKILL of the process keeps
// the page cache, so nothing acknowledged is lost to it; a crash of the
// machine could lose what the kernel had not written back yet, which no
// scenario here provokes.
type Kafka struct {
	lib        string
	dir        string
	port, ctrl int
	runs       int
	p          *proc
}

// NewKafka prepares a Kafka instance with its files under dir, running the
// jars in lib (see KafkaLib) with the java found in PATH.
func NewKafka(dir, lib string) (*Kafka, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return nil, fmt.Errorf("java not installed (scripts/brokers up kafka installs it): %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	k := &Kafka{lib: lib, dir: dir, port: ports[0], ctrl: ports[1]}
	if err := k.prepare(); err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return k, nil
}

func (k *Kafka) prepare() error {
	if err := os.MkdirAll(filepath.Join(k.dir, "data"), 0o755); err != nil {
		return err
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=%[3]s
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A restarted node waits for its previous registration to expire before
# it serves: keep that short.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
`, k.port, k.ctrl, filepath.Join(k.dir, "data"))
	log4j := `status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
`
	if err := os.WriteFile(filepath.Join(k.dir, "server.properties"), []byte(props), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(k.dir, "log4j2.properties"), []byte(log4j), 0o644)
}

func (k *Kafka) java(args ...string) *exec.Cmd {
	a := append([]string{"-Xms256m", "-Xmx512m", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(k.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.lib, "*")}, args...)
	return exec.Command("java", a...)
}

// Name implements Instance.
func (k *Kafka) Name() string { return "kafka" }

// Addr is the broker's host:port.
func (k *Kafka) Addr() string { return "127.0.0.1:" + strconv.Itoa(k.port) }

// URL implements Instance: a dead member's partitions move after 6s, the
// broker's smallest session timeout.
func (k *Kafka) URL() string {
	return "kafka://" + k.Addr() + "?partitions=3&session_timeout=6s&heartbeat_interval=500ms" +
		"&rebalance_timeout=15s&drain_timeout=5s&join_backoff=250ms&commit_interval=200ms&write_timeout=5s&dial_timeout=3s"
}

func (k *Kafka) format(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(k.dir, "data", "meta.properties")); err == nil {
		return nil
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	// Its first character from the top six bits: below 32 it is a
	// letter, never '-', which StorageTool would read as an option.
	b[0] &= 0x7f
	id := base64.RawURLEncoding.EncodeToString(b[:])
	cmd := k.java("kafka.tools.StorageTool", "format", "--standalone", "-t", id,
		"-c", filepath.Join(k.dir, "server.properties"), "--ignore-formatted")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("StorageTool format: %v\n%s", err, out)
	}
	return ctx.Err()
}

func (k *Kafka) logPath() string {
	return filepath.Join(k.dir, "kafka-"+strconv.Itoa(k.runs)+".log")
}

// Start implements Instance. It returns once the node says it has
// started and serves metadata.
func (k *Kafka) Start(ctx context.Context) error {
	if k.p != nil && !k.p.exited() {
		return errors.New("kafka: already running")
	}
	if err := k.format(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	k.runs++
	p, err := startProc(k.java("kafka.Kafka", filepath.Join(k.dir, "server.properties")), k.logPath())
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	k.p = p
	if err := poll(ctx, p, "kafka", k.ready); err != nil {
		k.Kill()
		return fmt.Errorf("kafka: %w\n%s", err, k.Logs())
	}
	return nil
}

func (k *Kafka) ready(ctx context.Context) error {
	b, err := os.ReadFile(k.logPath())
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "Kafka Server started") {
		return errors.New(`no "Kafka Server started" in its log yet`)
	}
	conn, err := (&kgo.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", k.Addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	bs, err := conn.Brokers()
	if err != nil {
		return err
	}
	if len(bs) == 0 {
		return errors.New("metadata lists no broker yet")
	}
	return nil
}

// Kill implements Instance.
func (k *Kafka) Kill() error { return k.p.kill(20 * time.Second) }

// Close implements Instance.
func (k *Kafka) Close() error {
	err := k.p.kill(20 * time.Second)
	if rerr := os.RemoveAll(k.dir); err == nil {
		err = rerr
	}
	return err
}

// Logs implements Instance: error lines first, then the last lines.
func (k *Kafka) Logs() string {
	b, _ := os.ReadFile(k.logPath())
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " ERROR ") || strings.Contains(l, " FATAL ") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 10 {
		errs = errs[len(errs)-10:]
	}
	return "---- errors in " + k.logPath() + "\n" + strings.Join(errs, "\n") + "\n" + tail(k.logPath(), 20)
}
