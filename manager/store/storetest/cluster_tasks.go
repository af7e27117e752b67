package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// CreateTask stores Owner and Origin as given; an unowned task's EventQueued is
// sent, an owned one's is not.
func testClusterCreateOwner(t *testing.T, open func(string) ClusterStore) {
	r1 := open("r1")
	ev := listen(t, r1)
	mustCreate(t, r1, clusterTask("owned", "r1", 0))
	ev.expect(t, "create an owned task")
	unowned := clusterTask("unowned", "", 0)
	unowned.Origin = "r1"
	mustCreate(t, r1, unowned)
	ev.expect(t, "create an unowned task", store.Event{Kind: store.EventQueued})
	if got := mustGet(t, r1, "owned"); got.Owner != "r1" || !got.LeaseExpiry.IsZero() {
		t.Errorf("owned task: Owner %q, LeaseExpiry %v, want r1 and zero", got.Owner, got.LeaseExpiry)
	}
	if got := mustGet(t, r1, "unowned"); got.Owner != "" || got.Origin != "r1" {
		t.Errorf("unowned task: Owner %q, Origin %q, want \"\" and r1", got.Owner, got.Origin)
	}
	// A failed create (a taken id) sends nothing.
	if err := r1.CreateTask(t.Context(), clusterTask("unowned", "", 0)); err == nil {
		t.Fatal("CreateTask of a taken id = nil, want ErrExists")
	}
	ev.expect(t, "create a taken id")
}

// A replica claims only the tasks it owns, and stores the lease's expiry.
func testClusterClaimFenced(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	mustCreateAll(t, r1, clusterTask("mine", "r1", 0), clusterTask("unowned", "", 0))
	l := store.Lease{ID: "lease-1", Delegate: "d1", Attempt: 1}

	// r2 attacks r1's task, and anyone's unowned one: refused, unchanged.
	for _, c := range []struct {
		s  store.Store
		id string
	}{{r2, "mine"}, {r1, "unowned"}, {r2, "unowned"}} {
		before := mustGet(t, c.s, c.id)
		checkErr(t, call("Claim", c.id), c.s.Claim(t.Context(), c.id, l), store.ErrConflict)
		checkUnchanged(t, c.s, before)
	}
	checkErr(t, call("Claim", "unknown"), r1.Claim(t.Context(), "unknown", l), store.ErrNotFound)

	start := time.Now()
	mustClaim(t, r1, "mine", l)
	got := mustGet(t, r2, "mine")
	if got.State != store.StateLeased || got.LeaseID != l.ID || got.Owner != "r1" {
		t.Errorf("after r1's Claim: %+v, want leased under %s, owned by r1", got, l.ID)
	}
	checkNear(t, "LeaseExpiry after Claim", got.LeaseExpiry, start.Add(ClusterLease))
}

// A replica requeues only the tasks it owns; the task stays its own.
func testClusterRequeueFenced(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r2)
	task := clusterTask("t", "r1", 20*time.Second)
	mustCreate(t, r1, task)
	l := store.Lease{ID: "lease-1", Delegate: "d1", Attempt: 1}
	mustClaim(t, r1, "t", l)
	before := mustGet(t, r1, "t")

	checkErr(t, call("Requeue", "t", l.ID), r2.Requeue(t.Context(), "t", l.ID), store.ErrConflict)
	checkUnchanged(t, r1, before)
	checkErr(t, call("Requeue", "t", "stale"), r1.Requeue(t.Context(), "t", "stale"), store.ErrConflict)
	checkUnchanged(t, r1, before)

	start := time.Now()
	if err := r1.Requeue(t.Context(), "t", l.ID); err != nil {
		t.Fatalf("Requeue by its owner = %v", err)
	}
	got := mustGet(t, r2, "t")
	want := *before
	want.State, want.LeaseID, want.Delegate, want.LeaseExpiry = store.StateQueued, "", "", time.Time{}
	want.QueueDeadline = got.QueueDeadline // checked below
	if diff := cmp.Diff(&want, got, taskCmp, ignoreUpdated); diff != "" {
		t.Errorf("after Requeue (-want +got):\n%s", diff)
	}
	// It waits in the queue again: its queue deadline starts again.
	checkNear(t, "QueueDeadline after Requeue", got.QueueDeadline, start.Add(30*time.Second))
	// Still r1's: nobody else is told to pull it.
	ev.expect(t, "requeue of an owned task")
}

// Complete is fenced by the lease alone: any replica completes the
// current lease's result; EventFinal follows.
func testClusterCompleteAnyReplica(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r1)
	mustCreate(t, r1, clusterTask("t", "r1", 0))
	l := store.Lease{ID: "lease-1", Delegate: "d1", Attempt: 1}
	mustClaim(t, r1, "t", l)
	f := store.Final{State: store.StateSucceeded, Code: "OK", Outcome: []byte("ok")}
	checkErr(t, call("Complete", "t", "stale"), r2.Complete(t.Context(), "t", "stale", f), store.ErrConflict)
	if err := r2.Complete(t.Context(), "t", l.ID, f); err != nil {
		t.Fatalf("Complete on another replica under the current lease = %v, want nil", err)
	}
	if got := mustGet(t, r1, "t"); got.State != store.StateSucceeded {
		t.Errorf("after Complete: state %s", got.State)
	}
	ev.expect(t, "complete", store.Event{Kind: store.EventFinal, TaskID: "t"})
	checkErr(t, call("Complete", "t", l.ID), r1.Complete(t.Context(), "t", l.ID, f), store.ErrConflict)
	ev.expect(t, "a second complete")
}

// When the head of an order chain becomes final, the next task of the
// chain becomes the head: its deadline and queue deadline start again
// with their lengths, and if unowned an EventQueued follows. A task that
// was not the head moves nothing.
func testClusterChainHead(t *testing.T, open func(string) ClusterStore) {
	r1 := open("r1")
	ev := listen(t, r1)
	const key = "eu-west-1 app/db"
	mustCreateAll(t, r1,
		ordered(clusterTask("a", "r1", 50*time.Second), key),
		ordered(clusterTask("b", "", 40*time.Second), key),
		ordered(clusterTask("c", "", 30*time.Second), key),
		ordered(clusterTask("other", "", 20*time.Second), "another key"))
	ev.drain(t)
	cBefore := mustGet(t, r1, "c")

	// b is not the head (a is): failing it starts nothing.
	fail := store.Final{State: store.StateFailed, Code: "CANCELLED", Outcome: []byte("x")}
	bBefore := mustGet(t, r1, "b")
	l := store.Lease{ID: "lease-a", Delegate: "d1", Attempt: 1}
	mustClaim(t, r1, "a", l)
	checkUnchanged(t, r1, bBefore)

	start := time.Now()
	if err := r1.Complete(t.Context(), "a", l.ID, store.Final{State: store.StateSucceeded, Code: "OK"}); err != nil {
		t.Fatal(err)
	}
	b := mustGet(t, r1, "b")
	checkNear(t, "new head's Deadline", b.Deadline, start.Add(60*time.Second))
	checkNear(t, "new head's QueueDeadline", b.QueueDeadline, start.Add(30*time.Second))
	checkUnchanged(t, r1, cBefore)
	ev.expect(t, "complete the head", store.Event{Kind: store.EventFinal, TaskID: "a"}, store.Event{Kind: store.EventQueued})

	// c is not the head: failing it moves nothing.
	if err := r1.Complete(t.Context(), "c", "", fail); err != nil {
		t.Fatal(err)
	}
	checkUnchanged(t, r1, b)
	ev.expect(t, "fail a task behind the head", store.Event{Kind: store.EventFinal, TaskID: "c"})

	// The last one: the chain is empty, nothing else moves.
	otherBefore := mustGet(t, r1, "other")
	if err := r1.Complete(t.Context(), "b", "", fail); err != nil {
		t.Fatal(err)
	}
	checkUnchanged(t, r1, otherBefore)
	ev.expect(t, "fail the last task", store.Event{Kind: store.EventFinal, TaskID: "b"})
}

// A single manager's store (no replica) on the same data ignores owners
// and stores no lease expiry, as before clusters.
func testClusterSingleManager(t *testing.T, open func(string) ClusterStore) {
	single := open("")
	mustCreate(t, single, clusterTask("t", "r1", 0))
	l := store.Lease{ID: "lease-1", Delegate: "d1", Attempt: 1}
	mustClaim(t, single, "t", l)
	if got := mustGet(t, single, "t"); !got.LeaseExpiry.IsZero() {
		t.Errorf("single manager's Claim stored LeaseExpiry %v, want none", got.LeaseExpiry)
	}
	if err := single.Requeue(t.Context(), "t", l.ID); err != nil {
		t.Errorf("single manager's Requeue of r1's task = %v, want nil", err)
	}
}
