package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestDrainOnSIGTERM (Done 6): the first SIGTERM drains an agent: the
// manager shows it draining and gives it no new task although it has free
// slots, its running tasks finish and succeed, it exits 0, and it is then
// no longer listed.
func TestDrainOnSIGTERM(t *testing.T) {
	m := startManager(t, managerOpts{QueueTimeout: 4 * time.Second})
	drainee := startAgent(t, m, "drainee", agentOpts{Tags: []string{"pool"}, Concurrency: 4})
	startAgent(t, m, "other", agentOpts{Tags: []string{"pool"}, Concurrency: 4})

	// Two long tasks only the drainee can run (its name is a tag); it
	// keeps two free slots.
	running := []string{
		m.pingAsync(t, 3*time.Second, "drainee"),
		m.pingAsync(t, 3*time.Second, "drainee"),
	}
	waitFor(t, 10*time.Second, "the drainee to run both tasks", func() error {
		ds, err := m.delegates(t.Context())
		if err != nil {
			return err
		}
		if got := len(ds["drainee"].GetRunningTasks()); got != 2 {
			return fmt.Errorf("drainee runs %d tasks", got)
		}
		return nil
	})

	drainee.signal(t, syscall.SIGTERM)
	waitFor(t, 5*time.Second, "smd delegate list to show the drainee draining", func() error {
		d, err := listedDelegate(t, m, "drainee")
		if err != nil {
			return err
		}
		if d == nil || !d.Draining {
			return fmt.Errorf("drainee listed as %+v", d)
		}
		return nil
	})
	if stdout, _, _ := smdCLI(t, m, "delegate", "list"); !strings.Contains(lineWith(stdout, "drainee"), "draining") {
		t.Errorf("smd delegate list: drainee row does not say draining:\n%s", stdout)
	}

	// New work: a task only the drainee matches waits; tasks any pool
	// member matches go to the other agent.
	onlyDrainee := m.pingAsync(t, 0, "drainee")
	var pool []string
	for range 3 {
		pool = append(pool, m.pingAsync(t, 0, "pool"))
	}
	for id, ti := range m.waitFinal(t, 10*time.Second, pool) {
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED || ti.GetDelegate() != "other" {
			t.Errorf("pool task %s = %s on %q, want SUCCEEDED on other", id, ti.GetState(), ti.GetDelegate())
		}
	}
	if ti := m.task(t, onlyDrainee); ti.GetState() != delegatev1.TaskState_QUEUED || ti.GetAttempt() != 0 {
		t.Errorf("task for the draining delegate = %s, attempt %d, on %q; want QUEUED, never dispatched",
			ti.GetState(), ti.GetAttempt(), ti.GetDelegate())
	}

	// The running tasks finish where they were, then the agent exits 0.
	if code := drainee.wait(t, 20*time.Second); code != 0 {
		t.Errorf("drainee exit code = %d, want 0", code)
	}
	for id, ti := range m.waitFinal(t, 5*time.Second, running) {
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED || ti.GetDelegate() != "drainee" || ti.GetAttempt() != 1 {
			t.Errorf("running task %s = %s, attempt %d, on %q; want SUCCEEDED, attempt 1, on drainee (%v)",
				id, ti.GetState(), ti.GetAttempt(), ti.GetDelegate(), ti.GetOutcome())
		}
	}
	waitFor(t, 5*time.Second, "the drainee to leave smd delegate list", func() error {
		d, err := listedDelegate(t, m, "drainee")
		if err != nil {
			return err
		}
		if d != nil {
			return fmt.Errorf("still listed: %+v", d)
		}
		return nil
	})

	// Nobody took the drainee-only task: it times out naming its selector.
	ti := m.waitFinal(t, 10*time.Second, []string{onlyDrainee})[onlyDrainee]
	if ti.GetOutcome().GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE || !strings.Contains(ti.GetOutcome().GetMessage(), "drainee") {
		t.Errorf("task for the drained delegate = %s: %s; want NO_ELIGIBLE_DELEGATE naming drainee",
			ti.GetOutcome().GetCode(), ti.GetOutcome().GetMessage())
	}
	if ti.GetAttempt() != 0 {
		t.Errorf("task for the drained delegate was dispatched %d times, want 0", ti.GetAttempt())
	}
}

// listedDelegate returns a delegate as `smd delegate list -o json` shows
// it, or nil if it is not listed.
func listedDelegate(t testing.TB, m *manager, name string) (*listedDelegateJSON, error) {
	t.Helper()
	stdout, stderr, code := smdCLI(t, m, "delegate", "list", "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("smd delegate list -o json: exit code %d: %s", code, stderr)
	}
	var resp struct {
		Delegates []listedDelegateJSON `json:"delegates"`
	}
	if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
		return nil, fmt.Errorf("smd delegate list -o json: %w\n%s", err, stdout)
	}
	for _, d := range resp.Delegates {
		if d.Name == name {
			return &d, nil
		}
	}
	return nil, nil
}

type listedDelegateJSON struct {
	Name         string   `json:"name"`
	Draining     bool     `json:"draining"`
	Connected    bool     `json:"connected"`
	RunningTasks []string `json:"running_tasks"`
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}
