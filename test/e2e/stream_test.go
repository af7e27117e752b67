package e2e

import (
	"fmt"
	"testing"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestStreamDropNoRedispatch (Done 5, process level): when the agent's
// connection breaks while it runs a task, within the lease, the agent
// reconnects, its Hello resumes the task, and the manager does not
// dispatch it again: attempt stays 1 and the same delegate completes it,
// even though the task runs longer than one lease and another eligible
// delegate is idle.
func TestStreamDropNoRedispatch(t *testing.T) {
	m := startManager(t, managerOpts{}) // lease 2s, heartbeat 500ms
	proxy := startProxy(t, m.Addr)
	startAgent(t, m, "proxied", agentOpts{Tags: []string{"p"}, Manager: proxy.Addr()})

	const sleep = 6 * time.Second // three leases long
	id := m.pingAsync(t, sleep, "p")
	waitFor(t, 10*time.Second, "the task to be leased by proxied", func() error {
		ti := m.task(t, id)
		if ti.GetState() != delegatev1.TaskState_LEASED || ti.GetDelegate() != "proxied" {
			return fmt.Errorf("task is %s on %q", ti.GetState(), ti.GetDelegate())
		}
		return nil
	})
	// Now an idle delegate that could take the task if it were requeued.
	startAgent(t, m, "direct", agentOpts{Tags: []string{"p"}})

	for drop := 1; drop <= 3; drop++ {
		before := delegateID(t, m, "proxied")
		if n := proxy.DropAll(); n == 0 {
			t.Fatalf("drop %d: the proxy had no connection to break", drop)
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("proxied to reconnect after drop %d", drop), func() error {
			ds, err := m.delegates(t.Context())
			if err != nil {
				return err
			}
			d := ds["proxied"]
			switch {
			case d == nil:
				return fmt.Errorf("proxied is not connected")
			case d.GetId() == before:
				return fmt.Errorf("proxied is still on its old stream %s", before)
			}
			return nil
		})
		if ti := m.task(t, id); ti.GetState() != delegatev1.TaskState_LEASED || ti.GetAttempt() != 1 || ti.GetDelegate() != "proxied" {
			t.Fatalf("after drop %d: task is %s, attempt %d, on %q; want LEASED, attempt 1, on proxied",
				drop, ti.GetState(), ti.GetAttempt(), ti.GetDelegate())
		}
		time.Sleep(time.Second) // let the task run on between drops
	}

	ti := m.waitFinal(t, 20*time.Second, []string{id})[id]
	if ti.GetState() != delegatev1.TaskState_SUCCEEDED || ti.GetAttempt() != 1 || ti.GetDelegate() != "proxied" {
		t.Errorf("task = %s, attempt %d, on %q; want SUCCEEDED, attempt 1, on proxied (%v)",
			ti.GetState(), ti.GetAttempt(), ti.GetDelegate(), ti.GetOutcome())
	}
	if got := ti.GetOutcome().GetPing().GetDelegateName(); got != "proxied" {
		t.Errorf("pong from %q, want proxied", got)
	}
	if got := proxy.Accepted(); got < 4 {
		t.Errorf("proxy accepted %d connections, want at least 4 (one per drop plus the first)", got)
	}
	// Each new stream's Hello carried the running task and the manager
	// kept its lease.
	if n := countLines(m.proc.log(), `"delegate":"proxied"`, `"resumed":1`, "delegate connected"); n < 3 {
		t.Errorf("manager logged %d reconnects of proxied resuming 1 task, want at least 3", n)
	}
	mt := m.metrics(t)
	if got := mt["smd_tasks_requeued_total"]; got != 0 {
		t.Errorf("smd_tasks_requeued_total = %v, want 0", got)
	}
	if got := mt["smd_stale_results_total"]; got != 0 {
		t.Errorf("smd_stale_results_total = %v, want 0", got)
	}
	if got := mt[`smd_task_outcomes_total{code="OK"}`]; got != 1 {
		t.Errorf(`smd_task_outcomes_total{code="OK"} = %v, want 1`, got)
	}
}

// delegateID is the stream id of a connected delegate; it changes at every
// reconnect.
func delegateID(t testing.TB, m *manager, name string) string {
	t.Helper()
	ds, err := m.delegates(t.Context())
	if err != nil {
		t.Fatalf("ListDelegates() = %v", err)
	}
	if ds[name] == nil {
		t.Fatalf("%s is not connected", name)
	}
	return ds[name].GetId()
}
