package e2e

import (
	"fmt"
	"testing"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestKillManagerRestart (Done 4): the manager is killed with SIGKILL while
// async tasks are queued and leased, and started again on the same data
// dir and port. The agents, never restarted, reconnect by themselves and
// every task succeeds. The tasks they were running when the manager died
// are resumed under their leases, not run again.
func TestKillManagerRestart(t *testing.T) {
	// A lease comfortably longer than an agent's reconnect, so resuming
	// is what the test sees, not a lease that expired meanwhile.
	m := startManager(t, managerOpts{Lease: 4 * time.Second})
	agents := []*proc{
		startAgent(t, m, "agent-1", agentOpts{Tags: []string{"pool"}, Concurrency: 4}),
		startAgent(t, m, "agent-2", agentOpts{Tags: []string{"pool"}, Concurrency: 4}),
	}

	const n = 60
	ids := m.pingAsyncN(t, n, time.Second, "pool")
	// Kill once a few have finished: the agents then hold 8 leases and
	// the rest are queued.
	var leased, queued []string
	waitFor(t, 20*time.Second, "some tasks done, 8 leased, the rest queued", func() error {
		ts, err := m.tasks(t.Context(), ids)
		if err != nil {
			return err
		}
		leased, queued = nil, nil
		done := 0
		for id, ti := range ts {
			switch ti.GetState() {
			case delegatev1.TaskState_LEASED:
				leased = append(leased, id)
			case delegatev1.TaskState_QUEUED:
				queued = append(queued, id)
			default:
				done++
			}
		}
		if done == 0 || len(leased) != 8 || len(queued) == 0 {
			return fmt.Errorf("%d done, %d leased, %d queued", done, len(leased), len(queued))
		}
		return nil
	})
	m.proc.kill(t)
	t.Logf("killed the manager with %d tasks leased and %d queued", len(leased), len(queued))

	m.restart(t)
	m.waitConnected(t, "agent-1", "agent-2")
	final := m.waitFinal(t, 40*time.Second, ids)

	for _, id := range ids {
		ti := final[id]
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("task %s = %s (%v), want SUCCEEDED", id, ti.GetState(), ti.GetOutcome())
			continue
		}
		if got := ti.GetOutcome().GetPing().GetDelegateName(); got != ti.GetDelegate() {
			t.Errorf("task %s: lease holder %q, but the pong is from %q", id, ti.GetDelegate(), got)
		}
	}
	for _, id := range leased {
		if ti := final[id]; ti.GetAttempt() != 1 {
			t.Errorf("task %s, leased when the manager died: attempt %d on %q, want 1 (resumed, not re-run)",
				id, ti.GetAttempt(), ti.GetDelegate())
		}
	}
	for i, a := range agents {
		if a.exited() {
			t.Errorf("agent-%d exited (code %d), want it to reconnect by itself", i+1, a.state.ExitCode())
		}
	}
	// The restarted manager counts only the completions it recorded: no
	// more than the tasks that were unfinished when it died.
	mt := m.metrics(t)
	if got, unfinished := mt[`smd_task_outcomes_total{code="OK"}`], len(leased)+len(queued); got < 1 || got > float64(unfinished) {
		t.Errorf(`after restart smd_task_outcomes_total{code="OK"} = %v, want between 1 and %d`, got, unfinished)
	}
	if got := mt["smd_tasks_requeued_total"]; got != 0 {
		t.Errorf("after restart smd_tasks_requeued_total = %v, want 0", got)
	}
}
