package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// chromium finds a headless-capable Chromium: $CHROMIUM, else Debian's
// chromium or another common name on PATH. Without one the test skips,
// or fails under CI=true, where `make chromium` installs it.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	msg := "no chromium to render the HTML report: install it with `make chromium` " +
		"(apt-get install chromium) or set CHROMIUM to a Chrome or Chromium binary"
	if brokertest.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// renderDOM loads page in headless Chromium and returns the DOM after its
// scripts ran.
func renderDOM(t *testing.T, page string) string {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+page)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, stderr.String())
	}
	if stdout.Len() == 0 {
		t.Fatalf("%s printed no DOM:\n%s", bin, stderr.String())
	}
	return stdout.String()
}

var (
	reRendered = regexp.MustCompile(`id="status"[^>]*data-rendered="([a-z]+)"|data-rendered="([a-z]+)"[^>]*id="status"`)
	reCharts   = regexp.MustCompile(`data-charts="(\d+)"`)
	reErrors   = regexp.MustCompile(`<html[^>]*data-errors="(\d+)"`)
)

func rendered(dom string) string {
	m := reRendered.FindStringSubmatch(dom)
	if m == nil {
		return ""
	}
	return m[1] + m[2]
}

func TestHTMLReportRendersInChromium(t *testing.T) {
	r := smallReport(t)
	page := filepath.Join(t.TempDir(), HTMLFile)
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, r); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dom := renderDOM(t, page)

	if m := reErrors.FindStringSubmatch(dom); m != nil {
		errs := regexp.MustCompile(`(?s)<pre id="errors"[^>]*>(.*?)</pre>`).FindStringSubmatch(dom)
		t.Fatalf("%s script errors: %v", m[1], errs)
	}
	if got := rendered(dom); got != "ok" {
		t.Fatalf("#status data-rendered = %q, want ok", got)
	}
	// One throughput chart and one latency chart per workload.
	m := reCharts.FindStringSubmatch(dom)
	if m == nil {
		t.Fatal("no chart count")
	}
	if n, _ := strconv.Atoi(m[1]); n != 3 {
		t.Errorf("%d charts, want 3", n)
	}
	if n := strings.Count(dom, `class="bar"`); n != 2 {
		t.Errorf("%d throughput bars, want 2", n)
	}
	if n := strings.Count(dom, `class="curve"`); n != 2 {
		t.Errorf("%d latency curves, want 2", n)
	}
	for _, d := range regexp.MustCompile(`class="curve" d="([^"]*)"`).FindAllStringSubmatch(dom, -1) {
		if strings.Contains(d[1], "NaN") || strings.Count(d[1], "L") < 10 {
			t.Errorf("curve path %q", d[1])
		}
	}
	for _, label := range []string{">90%<", ">99%<", ">99.9%<"} {
		if !strings.Contains(dom, label) {
			t.Errorf("percentile axis lacks %s", label)
		}
	}
}

// TestHTMLCheckSeesScriptErrors keeps the check above honest: a page whose
// script throws must be caught.
func TestHTMLCheckSeesScriptErrors(t *testing.T) {
	r := smallReport(t)
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(buf.String(), "throughput();", "throughput(); undefinedFunction();", 1)
	page := filepath.Join(t.TempDir(), HTMLFile)
	if err := os.WriteFile(page, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	dom := renderDOM(t, page)
	if m := reErrors.FindStringSubmatch(dom); m == nil || m[1] != "1" {
		t.Errorf("the thrown error went unrecorded")
	}
	if got := rendered(dom); got == "ok" {
		t.Errorf("a page whose script failed reports data-rendered=ok")
	}
}
