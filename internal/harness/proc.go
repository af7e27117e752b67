// Package harness runs smd as child processes, for the end-to-end tests
// (test/e2e) and the benchmarks (bench): it builds the binary, starts
// managers and agents with a log file each, writes their configuration,
// waits for a manager to be ready and dials its operator API. It returns
// errors; the tests wrap it in helpers that fail the test.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BuildSmd builds ./cmd/smd of the module the caller runs in into dir,
// with the go build flags given (e.g. -race) and env added to the
// environment (e.g. CGO_ENABLED=0), and returns the binary's path.
func BuildSmd(dir string, env []string, flags ...string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	bin := filepath.Join(dir, "smd")
	args := append(append([]string{"build"}, flags...), "-o", bin, "./cmd/smd")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, b)
	}
	return bin, nil
}

// Proc is a child process with its own log file.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string

	done  chan struct{}    // closed when the process has exited
	state *os.ProcessState // set before done is closed
}

// Start runs bin with args, its stdout and stderr appended to
// dir/<name>.log. The environment is the caller's without SMD_* variables
// (CleanEnv), plus env. A goroutine waits for the process; it ends when
// the process exits.
func Start(dir, name, bin string, env []string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(CleanEnv(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

// CleanEnv is the environment without SMD_* variables, so that an
// operator's shell cannot change what a test or a benchmark runs.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SMD_") {
			env = append(env, kv)
		}
	}
	return env
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the process's exit code once it has exited (-1 when a
// signal ended it).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.state.ExitCode()
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.Cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to timeout for the process to exit,
// then kills it. It does nothing when the process has exited.
func (p *Proc) Stop(timeout time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Log returns everything the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
