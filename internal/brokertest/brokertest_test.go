package brokertest

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// recorder stands in for a test so that require's skip or failure can be
// observed instead of ending the calling test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRequireUnreachable(t *testing.T) {
	addr := closedAddr(t)

	local := &recorder{TB: t}
	require(local, "redis", RedisEnv, []string{addr}, false)
	if local.failed != "" || !strings.Contains(local.skipped, "start it with: make up (scripts/brokers up redis)") {
		t.Errorf("outside CI: skipped=%q failed=%q; want a skip that says how to start redis", local.skipped, local.failed)
	}

	ci := &recorder{TB: t}
	require(ci, "redis", RedisEnv, []string{addr}, true)
	if ci.skipped != "" || !strings.Contains(ci.failed, "redis not reachable at "+addr) {
		t.Errorf("under CI: skipped=%q failed=%q; want a failure naming the address", ci.skipped, ci.failed)
	}
}

func TestRequireOneOfSeveral(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := &recorder{TB: t}
	require(r, "kafka", KafkaEnv, []string{closedAddr(t), l.Addr().String()}, true)
	if r.skipped != "" || r.failed != "" {
		t.Errorf("one address answers: skipped=%q failed=%q; want neither", r.skipped, r.failed)
	}
}

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "TRUE": true, "1": true, "": false, "false": false, "0": false} {
		t.Setenv("CI", v)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}

func TestURLAddr(t *testing.T) {
	ports := map[string]string{"amqp": "5672", "amqps": "5671"}
	for raw, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/": "127.0.0.1:5672",
		"amqp://broker/vhost":                "broker:5672",
		"amqps://[::1]/":                     "[::1]:5671",
		"amqp://u:p@h:1234":                  "h:1234",
	} {
		got, err := urlAddr(raw, ports)
		if err != nil || got != want {
			t.Errorf("urlAddr(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	if _, err := urlAddr("redis://127.0.0.1:6379/0", ports); err == nil {
		t.Error("urlAddr accepted a redis URL for AMQP")
	}
}

func TestURLAddrs(t *testing.T) {
	ports := map[string]string{"redis+cluster": "6379", "redis+sentinel": "26379"}
	got, err := urlAddrs("redis+cluster://10.77.0.21,10.77.0.22:7000/?wait=1", ports)
	if err != nil || strings.Join(got, " ") != "10.77.0.21:6379 10.77.0.22:7000" {
		t.Errorf("cluster: %q, %v", got, err)
	}
	got, err = urlAddrs("redis+sentinel://:pw@s1,s2/omnibus", ports)
	if err != nil || strings.Join(got, " ") != "s1:26379 s2:26379" {
		t.Errorf("sentinel: %q, %v", got, err)
	}
}

func TestSplitAddrs(t *testing.T) {
	got, err := splitAddrs(" 127.0.0.1:9092, b:9093 ,")
	if err != nil || strings.Join(got, "|") != "127.0.0.1:9092|b:9093" {
		t.Errorf("splitAddrs = %q, %v", got, err)
	}
	for _, bad := range []string{"", " , ", "no-port"} {
		if _, err := splitAddrs(bad); err == nil {
			t.Errorf("splitAddrs(%q) accepted it", bad)
		}
	}
}

func TestName(t *testing.T) {
	t.Run("sub test/with spaces", func(t *testing.T) {
		a, b := Name(t), Name(t)
		if a == b {
			t.Errorf("Name twice gave %q", a)
		}
		valid := regexp.MustCompile(`^omnibus-TestName_sub_test_with_spaces-[0-9a-f]{8}$`)
		if !valid.MatchString(a) {
			t.Errorf("Name = %q, want it to match %s", a, valid)
		}
	})
}

// An address of the clusters' subnet is refused from a network stack that
// would route it anywhere but over a scripts/clusters veth: here, the
// host's (or a test namespace's) default route.
func TestCheckRoutesRefusesTheDefaultRoute(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command")
	}
	if err := CheckRoutes("127.0.0.1:9092", "localhost:6379"); err != nil {
		t.Fatalf("loopback refused: %v", err)
	}
	out, _ := exec.Command("ip", "route", "get", "10.77.0.11").CombinedOutput()
	if strings.Contains(string(out), " dev omb-") {
		t.Skip("this test runs inside the clusters' client namespace")
	}
	if err := CheckRoutes("127.0.0.1:9092", "10.77.0.11:9092"); err == nil {
		t.Fatalf("10.77.0.11 accepted by route %q", out)
	}
}
