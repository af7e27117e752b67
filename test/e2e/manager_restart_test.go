package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestKillManagerRestart (Done 4): the manager is killed with SIGKILL while
// async tasks are queued and leased, and started again on the same data
// dir and port. The agents, never restarted, reconnect by themselves and
// every task succeeds. The tasks they were running when the manager died
// are resumed under their leases, not run again.
func TestKillManagerRestart(t *testing.T) {
	testKillManagerRestart(t, managerOpts{}, 0)
}

// TestKillManagerRestartPostgres is TestKillManagerRestart with the
// manager's store in PostgreSQL (a database of its own on the test
// server): what the killed manager committed there, the restarted one
// recovers. The DSN carries a password (the test server trusts loopback
// and ignores it), which the manager's log must never show.
//
// One difference is allowed: a claim the killed manager had sent but not
// seen acknowledged still commits on the server, which outlives its
// client, so the restarted manager finds the task leased to a delegate
// that never received it, and requeues it when that lease expires. Such
// claims are for free slots, so at most 8 (two agents of 4); tasks that
// were leased when the manager died are still resumed, not run again.
func TestKillManagerRestartPostgres(t *testing.T) {
	const pw = "planted-Pa55word-e2e-51c7"
	db, _ := pgtest.Database(t)
	dsn := withPassword(db, pw)
	m := testKillManagerRestart(t, managerOpts{PostgresDSN: dsn}, 8)
	logs, _ := filepath.Glob(filepath.Join(m.dir, "manager*.log"))
	if len(logs) != 2 {
		t.Fatalf("manager logs = %q, want the killed manager's and the restarted one's", logs)
	}
	for _, path := range logs {
		b, err := os.ReadFile(path)
		switch {
		case err != nil:
			t.Error(err)
		case strings.Contains(string(b), pw):
			t.Errorf("%s holds the store DSN's password", filepath.Base(path))
		case !strings.Contains(string(b), `"driver":"postgres"`):
			t.Errorf("%s does not say the manager opened the postgres store:\n%s", filepath.Base(path), tail(string(b), 20))
		}
	}
}

// withPassword adds a password to a postgres:// DSN without one.
func withPassword(dsn, pw string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn + " password=" + pw
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// testKillManagerRestart runs TestKillManagerRestart on a manager started
// with opts and returns it. maxRequeued bounds the leases that may expire
// after the restart.
func testKillManagerRestart(t *testing.T, opts managerOpts, maxRequeued float64) *manager {
	// A lease comfortably longer than an agent's reconnect, so resuming
	// is what the test sees, not a lease that expired meanwhile.
	opts.Lease = 4 * time.Second
	m := startManager(t, opts)
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
			t.Errorf("agent-%d exited (code %d), want it to reconnect by itself", i+1, a.ExitCode())
		}
	}
	// The restarted manager counts only the completions it recorded: no
	// more than the tasks that were unfinished when it died.
	mt := m.metrics(t)
	if got, unfinished := mt[`smd_task_outcomes_total{code="OK"}`], len(leased)+len(queued); got < 1 || got > float64(unfinished) {
		t.Errorf(`after restart smd_task_outcomes_total{code="OK"} = %v, want between 1 and %d`, got, unfinished)
	}
	if got := mt["smd_tasks_requeued_total"]; got > maxRequeued {
		t.Errorf("after restart smd_tasks_requeued_total = %v, want at most %v", got, maxRequeued)
	}
	return m
}
