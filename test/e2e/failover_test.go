package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue11AgentFailsOverToAnotherManager: two independent managers
// (each its own bolt data dir) accept the same delegate token; an agent
// whose manager key lists both connects to one. That manager is frozen
// (SIGSTOP) while the agent holds two of its tasks: one finishes then,
// so its result stays unacknowledged, the other keeps running. The
// manager is then SIGKILLed. The agent connects to the other manager by
// itself, and both tasks it held reach it: the Hello lists the running
// one, the unacknowledged result is sent again. That manager never knew
// them (it is not a replica of the first): it refuses both results as
// stale, which is all that holds between independent managers. The
// agent then runs a ping submitted to the new manager.
func TestIssue11AgentFailsOverToAnotherManager(t *testing.T) {
	token := randomToken(t, "smdd_e2e_shared_")
	// A lease far longer than the freeze, so the agent does not fence the
	// running task meanwhile (fencing is issue 10's, tested elsewhere).
	opts := managerOpts{Lease: 20 * time.Second, Heartbeat: time.Second, Tokens: []tokenOpt{{Kind: "delegate", Token: token}}}
	ms := []*manager{startManager(t, opts), startManager(t, opts)}
	ag := startAgent(t, ms[0], "roamer", agentOpts{
		Tags: []string{"roam"}, Token: token, Managers: []string{ms[0].Addr, ms[1].Addr}, LogLevel: "debug",
	})

	var first, second *manager
	waitFor(t, 20*time.Second, "the agent to connect to one of the managers", func() error {
		for i, m := range ms {
			if ds, err := m.delegates(t.Context()); err == nil && ds["roamer"] != nil {
				first, second = m, ms[1-i]
				return nil
			}
		}
		return fmt.Errorf("not connected to either")
	})
	if n := countLines(ag.log(), "connected to manager", `"address":"`+first.Addr+`"`); n != 1 {
		t.Errorf("agent log: %d lines say it connected to %s, want 1:\n%s", n, first.Addr, tail(ag.log(), 10))
	}

	quick := first.pingAsync(t, 3*time.Second, "roam")
	long := first.pingAsync(t, 20*time.Second, "roam")
	waitFor(t, 20*time.Second, "both pings leased to the agent", func() error {
		ts, err := first.tasks(t.Context(), []string{quick, long})
		if err != nil {
			return err
		}
		for id, ti := range ts {
			if ti.GetState() != delegatev1.TaskState_LEASED {
				return fmt.Errorf("%s is %s", id, ti.GetState())
			}
		}
		return nil
	})
	first.proc.signal(t, syscall.SIGSTOP)
	waitFor(t, 20*time.Second, "the agent to finish the quick ping while its manager is frozen", func() error {
		if countLines(ag.log(), "task finished", quick) == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	first.proc.kill(t)

	second.waitConnected(t, "roamer")
	if n := countLines(ag.log(), "connected to manager", `"address":"`+second.Addr+`"`, `"resumed":1`); n != 1 {
		t.Errorf("agent log: %d lines say it connected to %s resuming 1 task, want 1:\n%s", n, second.Addr, tail(ag.log(), 10))
	}
	// Both tasks the agent held reached the new manager: the quick one's
	// unacknowledged result, and the long one's (cancelled by the new
	// manager, which holds no lease for it).
	waitFor(t, 20*time.Second, "the held tasks' two results at the new manager", func() error {
		if got := second.metrics(t)["smd_stale_results_total"]; got != 2 {
			return fmt.Errorf("smd_stale_results_total = %v", got)
		}
		for _, id := range []string{quick, long} {
			if n := countLines(ag.log(), "manager discarded a stale result", id); n != 1 {
				return fmt.Errorf("agent log: %d lines say the new manager refused %s's result", n, id)
			}
		}
		return nil
	})

	info, err := second.API().Ping(t.Context(), &delegatev1.PingRequest{Selectors: []string{"roam"}, Sleep: durationpb.New(0)})
	if err != nil {
		t.Fatalf("Ping at the new manager = %v", err)
	}
	if info.GetState() != delegatev1.TaskState_SUCCEEDED || info.GetOutcome().GetPing().GetDelegateName() != "roamer" {
		t.Errorf("Ping at the new manager = %s %v, want SUCCEEDED by roamer", info.GetState(), info.GetOutcome())
	}
	if ag.exited() {
		t.Errorf("agent exited (code %d), want it connected", ag.ExitCode())
	}
	if log := ag.log(); strings.Contains(log, token) {
		t.Errorf("agent log holds its token")
	}
}
