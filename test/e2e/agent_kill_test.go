package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestKillAgentMidway (Done 3): two agents share the work of 200 async
// pings; one is killed with SIGKILL midway. Its leases expire and the
// survivor re-runs those tasks (attempt 2); every task succeeds, and
// completes exactly once.
func TestKillAgentMidway(t *testing.T) {
	m := startManager(t, managerOpts{}) // lease 2s, heartbeat 500ms
	victim := startAgent(t, m, "victim", agentOpts{Tags: []string{"pool"}, Concurrency: 8})
	startAgent(t, m, "survivor", agentOpts{Tags: []string{"pool"}, Concurrency: 8})

	const n = 200
	ids := m.pingAsyncN(t, n, 300*time.Millisecond, "pool")

	// Midway: a good share done, and the victim holding leases.
	var held []string
	waitFor(t, 30*time.Second, "work to be midway with the victim holding leases", func() error {
		ok := m.metrics(t)[`smd_task_outcomes_total{code="OK"}`]
		ds, err := m.delegates(t.Context())
		if err != nil {
			return err
		}
		held = ds["victim"].GetRunningTasks()
		if ok < n/4 || len(held) == 0 {
			return fmt.Errorf("%v tasks succeeded, victim runs %d", ok, len(held))
		}
		return nil
	})
	victim.kill(t)
	t.Logf("killed the victim holding %d leases", len(held))

	final := m.waitFinal(t, 40*time.Second, ids)
	perDelegate := map[string]int{}
	rerun := 0
	for _, id := range ids {
		ti := final[id]
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("task %s = %s (%v), want SUCCEEDED", id, ti.GetState(), ti.GetOutcome())
			continue
		}
		if got := ti.GetOutcome().GetPing().GetDelegateName(); got != ti.GetDelegate() {
			t.Errorf("task %s: lease holder %q, but the pong is from %q", id, ti.GetDelegate(), got)
		}
		perDelegate[ti.GetDelegate()]++
		switch ti.GetAttempt() {
		case 1:
		case 2:
			// Only the victim lost leases, so only the survivor re-runs.
			rerun++
			if ti.GetDelegate() != "survivor" {
				t.Errorf("task %s: attempt 2 ran on %q, want survivor", id, ti.GetDelegate())
			}
		default:
			t.Errorf("task %s: attempt %d, want 1 or 2", id, ti.GetAttempt())
		}
	}
	t.Logf("succeeded per delegate: %v; re-run after the kill: %d", perDelegate, rerun)
	if rerun == 0 {
		t.Errorf("no task was re-run after the victim was killed holding %d leases", len(held))
	}
	// Every lease the victim held at the kill either completed on the
	// victim just before it died or was re-run by the survivor.
	for _, id := range held {
		ti := final[id]
		victimDone := ti.GetDelegate() == "victim" && ti.GetAttempt() == 1
		rerunDone := ti.GetDelegate() == "survivor" && ti.GetAttempt() == 2
		if !victimDone && !rerunDone {
			t.Errorf("task %s held by the victim at the kill: on %q, attempt %d; want re-run by survivor",
				id, ti.GetDelegate(), ti.GetAttempt())
		}
	}

	mt := m.metrics(t)
	// Exactly once: n completions recorded, whatever the re-runs.
	if got := mt[`smd_task_outcomes_total{code="OK"}`]; got != n {
		t.Errorf(`smd_task_outcomes_total{code="OK"} = %v, want %d`, got, n)
	}
	if got := mt["smd_tasks_requeued_total"]; got != float64(rerun) {
		t.Errorf("smd_tasks_requeued_total = %v, want %d (one per re-run task)", got, rerun)
	}
	// A re-run follows a lease that expired, or a task the manager had
	// leased to the victim but could not send before its stream closed
	// ("delegate stream closed before the task was sent"): one line each.
	if n := countLines(m.proc.log(), "task returns to the queue"); n != rerun {
		t.Errorf("manager logged %d tasks returning to the queue, want %d", n, rerun)
	}
	if n := countLines(m.proc.log(), "task returns to the queue", `"delegate":"survivor"`); n != 0 {
		t.Errorf("manager logged %d tasks of the survivor returning to the queue, want 0", n)
	}
}

// TestStaleResultsFenced (Done 3, fencing): an agent frozen with SIGSTOP
// for longer than the lease loses its tasks to another agent; when it is
// resumed with SIGCONT, each of its runs either ends by its own fence
// (issue 10: no word from the manager for a lease duration), whose
// result it withholds, or finishes first and is reported late, under a
// lease that is no longer current, and acknowledged and discarded: every
// task completes exactly once, with the other agent's result.
func TestStaleResultsFenced(t *testing.T) {
	m := startManager(t, managerOpts{}) // lease 2s, heartbeat 500ms
	frozen := startAgent(t, m, "frozen", agentOpts{Tags: []string{"pool"}, Concurrency: 4})

	const n = 4
	ids := m.pingAsyncN(t, n, 2*time.Second, "pool")
	waitFor(t, 10*time.Second, "frozen to run all tasks", func() error {
		ds, err := m.delegates(t.Context())
		if err != nil {
			return err
		}
		if got := len(ds["frozen"].GetRunningTasks()); got != n {
			return fmt.Errorf("frozen runs %d of %d", got, n)
		}
		return nil
	})
	frozen.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { _ = frozen.Signal(syscall.SIGCONT) })

	// The leases expire; the tasks go to the other agent.
	startAgent(t, m, "thawed-out", agentOpts{Tags: []string{"pool"}, Concurrency: 4})
	waitFor(t, 15*time.Second, "the tasks to be re-leased to thawed-out", func() error {
		ts, err := m.tasks(t.Context(), ids)
		if err != nil {
			return err
		}
		for _, ti := range ts {
			if ti.GetAttempt() != 2 || ti.GetDelegate() != "thawed-out" {
				return fmt.Errorf("task %s: %s, attempt %d, on %q", ti.GetId(), ti.GetState(), ti.GetAttempt(), ti.GetDelegate())
			}
		}
		return nil
	})
	// Thaw while the other agent still holds the new leases: the late
	// results meet tasks that are leased, under another lease id.
	frozen.signal(t, syscall.SIGCONT)
	const withheld = "fenced task ended; its result is not reported"
	stale := 0
	waitFor(t, 10*time.Second, "the late results to be discarded or withheld", func() error {
		stale = int(m.metrics(t)["smd_stale_results_total"])
		if w := countLines(frozen.log(), withheld); stale+w != n {
			return fmt.Errorf("smd_stale_results_total = %d, withheld by the fence %d", stale, w)
		}
		return nil
	})

	final := m.waitFinal(t, 20*time.Second, ids)
	for _, id := range ids {
		ti := final[id]
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED || ti.GetAttempt() != 2 || ti.GetDelegate() != "thawed-out" {
			t.Errorf("task %s = %s, attempt %d, on %q; want SUCCEEDED, attempt 2, on thawed-out (%v)",
				id, ti.GetState(), ti.GetAttempt(), ti.GetDelegate(), ti.GetOutcome())
		}
		if got := ti.GetOutcome().GetPing().GetDelegateName(); got != "thawed-out" {
			t.Errorf("task %s: pong from %q, want thawed-out: a stale result was accepted", id, got)
		}
	}
	mt := m.metrics(t)
	if got := mt[`smd_task_outcomes_total{code="OK"}`]; got != n {
		t.Errorf(`smd_task_outcomes_total{code="OK"} = %v, want %d`, got, n)
	}
	if got := mt["smd_stale_results_total"]; got != float64(stale) {
		t.Errorf("smd_stale_results_total = %v, want %d (one per late result reported)", got, stale)
	}
	if got := mt["smd_tasks_requeued_total"]; got != n {
		t.Errorf("smd_tasks_requeued_total = %v, want %d", got, n)
	}
	// The frozen agent was told: it logs each discarded result.
	waitFor(t, 10*time.Second, "frozen to get the acks of its stale results", func() error {
		if got := countLines(frozen.log(), "manager discarded a stale result"); got != stale {
			return fmt.Errorf("frozen logged %d discarded results", got)
		}
		return nil
	})
	if frozen.exited() {
		t.Errorf("frozen exited after it was resumed, want it to carry on")
	}
	ds, err := m.delegates(t.Context())
	if err != nil {
		t.Fatalf("ListDelegates() = %v", err)
	}
	if d := ds["frozen"]; d == nil || len(d.GetRunningTasks()) != 0 {
		t.Errorf("frozen after the thaw: %v; want connected and running nothing", d)
	}
}
