package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Instance is a broker process the chaos harness owns.
type Instance interface {
	// Name is the broker's name: redis, rabbitmq, kafka or rocketmq.
	Name() string
	// URL opens the instance with bus.Open; its query sets the timeouts
	// the scenarios rely on (visibility timeout, session timeout...).
	URL() string
	// Start starts the broker on its ports and data directory, a second
	// time after Kill included, and returns once it answers.
	Start(ctx context.Context) error
	// Kill sends SIGKILL to the broker process and returns once it is gone.
	Kill() error
	// Close kills the broker if it runs and removes its data.
	Close() error
	// Logs returns the last lines of the broker's logs, for diagnostics.
	Logs() string
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// proc is one run of a broker's command.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the command has exited
	err  error         // its exit status, after done
}

func startProc(cmd *exec.Cmd, logPath string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a terminal's Ctrl-C goes to the test only.
	// If the test process dies without cleaning up (a -timeout panic, a
	// SIGKILL), the broker is killed with it rather than left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process and its group and waits for it.
func (p *proc) kill(wait time.Duration) error {
	if p == nil {
		return nil
	}
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.cmd.Path, p.cmd.Process.Pid, wait)
	}
}

// killPid SIGKILLs a process that is not our child and waits until it is
// gone (or a zombie).
func killPid(pid int, wait time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pid %d still running %v after SIGKILL", pid, wait)
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// tail returns the last n lines of a file, or a note why it cannot.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "---- " + path + "\n" + string(bytes.Join(lines, []byte("\n")))
}

// poll calls ready until it succeeds, ctx is done, or the process exits.
func poll(ctx context.Context, p *proc, what string, ready func(context.Context) error) error {
	var last error
	for {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while starting: %v", what, p.err)
		}
		a, cancel := context.WithTimeout(ctx, 3*time.Second)
		last = ready(a)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
