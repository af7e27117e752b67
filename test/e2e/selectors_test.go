package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSelectorsProcess (Done 2, process level): selectors are trimmed and
// lower-cased and a task goes only to a delegate carrying all of them; a
// selector no delegate carries fails with exit code 4 and names it.
func TestSelectorsProcess(t *testing.T) {
	m := startManager(t, managerOpts{QueueTimeout: 2 * time.Second})
	startAgent(t, m, "agent-ab", agentOpts{Tags: []string{"a", "b"}})
	startAgent(t, m, "agent-a", agentOpts{Tags: []string{"a"}})

	t.Run("both selectors", func(t *testing.T) {
		for i := range 10 {
			stdout, stderr, code := smdCLI(t, m, "delegate", "ping", "--selector", "A", "--selector", " b ")
			if code != 0 {
				t.Fatalf("ping #%d: exit code = %d, want 0\nstderr: %s", i, code, stderr)
			}
			if !strings.HasPrefix(stdout, "pong from agent-ab ") {
				t.Errorf("ping #%d: stdout = %q, want a pong from agent-ab", i, stdout)
			}
		}
	})

	t.Run("json output names the delegate", func(t *testing.T) {
		stdout, stderr, code := smdCLI(t, m, "delegate", "ping", "-o", "json", "--selector", "B")
		if code != 0 {
			t.Fatalf("exit code = %d, want 0\nstderr: %s", code, stderr)
		}
		var info struct {
			State    string `json:"state"`
			Delegate string `json:"delegate"`
			Outcome  struct {
				Ping struct {
					DelegateName string `json:"delegate_name"`
				} `json:"ping"`
			} `json:"outcome"`
		}
		if err := json.Unmarshal([]byte(stdout), &info); err != nil {
			t.Fatalf("ping -o json: %v\n%s", err, stdout)
		}
		if info.State != "SUCCEEDED" || info.Delegate != "agent-ab" || info.Outcome.Ping.DelegateName != "agent-ab" {
			t.Errorf("ping -o json = state %q, delegate %q, pong from %q; want SUCCEEDED, agent-ab, agent-ab\n%s",
				info.State, info.Delegate, info.Outcome.Ping.DelegateName, stdout)
		}
	})

	t.Run("no delegate carries the selector", func(t *testing.T) {
		start := time.Now()
		stdout, stderr, code := smdCLI(t, m, "delegate", "ping", "--selector", "c")
		if code != 4 {
			t.Fatalf("exit code = %d, want 4 (no eligible delegate)\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, "NO_ELIGIBLE_DELEGATE") || !strings.Contains(stderr, "[c]") {
			t.Errorf("stderr = %q, want NO_ELIGIBLE_DELEGATE naming the selector [c]", stderr)
		}
		// The message helps the operator: it lists what the connected
		// delegates carry.
		for _, name := range []string{"agent-ab", "agent-a"} {
			if !strings.Contains(stderr, name) {
				t.Errorf("stderr = %q, want it to list the connected delegate %s", stderr, name)
			}
		}
		if took := time.Since(start); took < 2*time.Second {
			t.Errorf("failed after %s, before the queue timeout of 2s", took)
		}
	})
}
