package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// checkOutcome fails t unless task failed with code, its stored outcome
// is a delegate.v1.Outcome with that code and a message containing msg,
// and it keeps no payload.
func checkOutcome(t *testing.T, task *store.Task, code delegatev1.Code, msg string) {
	t.Helper()
	if task.State != store.StateFailed || task.Code != code.String() {
		t.Errorf("task %s: %s %s, want failed %s", task.ID, task.State, task.Code, code)
	}
	o := &delegatev1.Outcome{}
	if err := proto.Unmarshal(task.Outcome, o); err != nil || o.GetCode() != code || !strings.Contains(o.GetMessage(), msg) {
		t.Errorf("task %s: outcome %v (%v), want code %s and a message containing %q", task.ID, o, err, code, msg)
	}
	if len(task.Payload) != 0 {
		t.Errorf("task %s failed by the store keeps a payload of %d bytes, want none", task.ID, len(task.Payload))
	}
}

// lapse makes replica r's lease of task id lapse ago before now.
func lapse(t *testing.T, s ClusterStore, r, id, lease string, ago time.Duration) {
	t.Helper()
	if missed, err := s.RenewLeases(t.Context(), r, []store.LeaseRef{{TaskID: id, LeaseID: lease}}, -ago); err != nil || len(missed) != 0 {
		t.Fatalf("RenewLeases(%s, -%s) = %v, %v", id, ago, missed, err)
	}
}

// ExpireLeases takes back leases that lapsed more than the margin ago,
// whoever owns the task: queued again unowned, or DELEGATE_LOST once its
// attempts are used; ordered tasks get orderMargin more.
func testClusterExpireLeases(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r2)
	mustCreateAll(t, r1,
		clusterTask("retry", "r1", 3*time.Second),
		ordered(clusterTask("last", "r1", 2*time.Second), "k"),
		ordered(clusterTask("next", "", time.Second), "k"),
		ordered(clusterTask("fenced", "r1", 0), "k2"),
		clusterTask("alive", "r1", 0))
	for id, attempt := range map[string]int{"retry": 1, "last": 2, "fenced": 1, "alive": 1} {
		mustClaim(t, r1, id, store.Lease{ID: "l-" + id, Delegate: "d1", Attempt: attempt})
	}
	lapse(t, r1, "r1", "retry", "l-retry", time.Minute)
	lapse(t, r1, "r1", "last", "l-last", 2*time.Hour)
	lapse(t, r1, "r1", "fenced", "l-fenced", time.Minute)
	aliveBefore := mustGet(t, r1, "alive")
	ev.drain(t)

	// Lapsed a minute ago: not beyond a margin of two; the ordered
	// ones, two hours ago, not beyond two minutes and three hours.
	if got, err := r2.ExpireLeases(t.Context(), 2*time.Minute, 3*time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("ExpireLeases(2m, 3h) = %v, %v, want nothing", ids(got), err)
	}
	start := time.Now()
	got, err := r2.ExpireLeases(t.Context(), 30*time.Second, time.Hour)
	if err != nil {
		t.Fatalf("ExpireLeases = %v", err)
	}
	if g := ids(got); len(g) != 2 || !slices.Contains(g, "retry") || !slices.Contains(g, "last") {
		t.Fatalf("ExpireLeases(30s, 1h) = %v, want retry and last (fenced is ordered: an hour more)", g)
	}
	retry := mustGet(t, r1, "retry")
	if retry.State != store.StateQueued || retry.Owner != "" || retry.Attempt != 1 || retry.LeaseID != "" || !retry.LeaseExpiry.IsZero() {
		t.Errorf("lapsed task with attempts left: %+v, want queued, unowned, attempt 1, no lease", retry)
	}
	checkNear(t, "requeued task's QueueDeadline", retry.QueueDeadline, start.Add(30*time.Second))
	last := mustGet(t, r1, "last")
	checkOutcome(t, last, delegatev1.Code_DELEGATE_LOST, "delegate d1 stopped renewing the lease and the task used all 2 attempts")
	// The chain goes on: its next task is the head, its timers restarted.
	checkNear(t, "next head's Deadline", mustGet(t, r1, "next").Deadline, start.Add(60*time.Second))
	ev.expect(t, "expire leases", store.Event{Kind: store.EventQueued}, store.Event{Kind: store.EventFinal, TaskID: "last"})
	checkUnchanged(t, r1, aliveBefore)

	// The owner, stale, can neither requeue nor claim what was taken.
	checkErr(t, call("Requeue", "retry", "l-retry"), r1.Requeue(t.Context(), "retry", "l-retry"), store.ErrConflict)
	checkErr(t, call("Claim", "retry"), r1.Claim(t.Context(), "retry", store.Lease{ID: "again", Delegate: "d1", Attempt: 2}), store.ErrConflict)

	if got, err := r2.ExpireLeases(t.Context(), 30*time.Second, 0); err != nil || !slices.Equal(ids(got), []string{"fenced"}) {
		t.Errorf("ExpireLeases(30s, 0) = %v, %v, want [fenced]", ids(got), err)
	}
	if got, err := r2.ExpireLeases(t.Context(), 0, 0); err != nil || len(got) != 0 {
		t.Errorf("ExpireLeases again = %v, %v, want nothing", ids(got), err)
	}
}

// ExpireQueued fails unowned queued chain heads past their deadline
// (TIMEOUT) or queue deadline (NO_ELIGIBLE_DELEGATE); never an owned
// task, nor one waiting behind its chain's head.
func testClusterExpireQueued(t *testing.T, open func(string) ClusterStore) {
	r1 := open("r1")
	ev := listen(t, r1)
	rec := store.DelegateRecord{Name: "d-prod", Replica: "r1", Tags: []string{"prod", "linux"}, Capacity: 4}
	if _, err := r1.ConnectDelegate(t.Context(), rec, nil); err != nil {
		t.Fatal(err)
	}
	mustCreateAll(t, r1,
		clusterTask("no-delegate", "", 40*time.Second),
		clusterTask("too-late", "", 70*time.Second),
		clusterTask("owned", "r1", 70*time.Second),
		ordered(clusterTask("head-owned", "r1", 100*time.Second), "k1"),
		ordered(clusterTask("behind-owned", "", 90*time.Second), "k1"),
		ordered(clusterTask("head", "", 100*time.Second), "k2"),
		ordered(clusterTask("behind", "", 90*time.Second), "k2"),
		clusterTask("fresh", "", 0))
	keep := map[string]*store.Task{}
	for _, id := range []string{"owned", "head-owned", "behind-owned", "fresh"} {
		keep[id] = mustGet(t, r1, id)
	}
	ev.drain(t)
	start := time.Now()
	got, err := r1.ExpireQueued(t.Context())
	if err != nil {
		t.Fatalf("ExpireQueued = %v", err)
	}
	if g := ids(got); !slices.Equal(g, []string{"head", "too-late", "no-delegate"}) {
		t.Errorf("ExpireQueued = %v, want [head too-late no-delegate] (oldest first)", g)
	}
	checkOutcome(t, mustGet(t, r1, "no-delegate"), delegatev1.Code_NO_ELIGIBLE_DELEGATE,
		"no eligible delegate within 30s: the task needs a delegate with all of the selectors [prod]; connected delegates: d-prod [linux, prod]")
	checkOutcome(t, mustGet(t, r1, "too-late"), delegatev1.Code_TIMEOUT, "task did not complete within its deadline of 1m0s")
	checkOutcome(t, mustGet(t, r1, "head"), delegatev1.Code_TIMEOUT, "deadline")
	for _, task := range keep {
		checkUnchanged(t, r1, task)
	}
	behind := mustGet(t, r1, "behind")
	if behind.State != store.StateQueued {
		t.Errorf("the task behind an expired head: %s, want queued", behind.State)
	}
	checkNear(t, "new head's Deadline", behind.Deadline, start.Add(60*time.Second))
	ev.expect(t, "expire queued",
		store.Event{Kind: store.EventFinal, TaskID: "no-delegate"}, store.Event{Kind: store.EventFinal, TaskID: "too-late"},
		store.Event{Kind: store.EventFinal, TaskID: "head"}, store.Event{Kind: store.EventQueued})
	if got, err := r1.ExpireQueued(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("ExpireQueued again = %v, %v, want nothing", ids(got), err)
	}
}
