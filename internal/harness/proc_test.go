package harness_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/harness"
)

// TestStartLogExit: a child's output lands in its log, its exit code is
// kept, and it does not see the caller's SMD_* variables.
func TestStartLogExit(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	t.Setenv("SMD_TOKEN", "planted-token")
	p, err := harness.Start(t.TempDir(), "child", sh, []string{"EXTRA=given"},
		"-c", `echo "token=${SMD_TOKEN:-none} extra=$EXTRA"; exit 3`)
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	if code := p.ExitCode(); code != 3 {
		t.Errorf("ExitCode() = %d, want 3", code)
	}
	if !p.Exited() {
		t.Errorf("Exited() = false after ExitCode")
	}
	if got, want := strings.TrimSpace(p.Log()), "token=none extra=given"; got != want {
		t.Errorf("Log() = %q, want %q", got, want)
	}
}

// TestWaitReadyExited: a manager that exits before /readyz answers is
// reported as ErrExited, with its exit code and log.
func TestWaitReadyExited(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	p, err := harness.Start(t.TempDir(), "manager", sh, nil, "-c", "echo address already in use; exit 1")
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	err = harness.WaitReady(p, addr, time.Minute)
	if !errors.Is(err, harness.ErrExited) || !strings.Contains(err.Error(), "code 1") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("WaitReady = %v, want ErrExited with code 1 and the log", err)
	}
}
