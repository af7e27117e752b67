package storetest

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// testDurable closes a store and opens its directory again: everything
// acknowledged must be there, indexes included, and leases must still fence.
func testDurable(t *testing.T, open OpenFunc) {
	ctx := t.Context()
	dir := t.TempDir()
	s := mustOpenDir(t, open, dir)
	tasks := listFixture(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	s = mustOpenDir(t, open, dir)
	for _, want := range tasks {
		if diff := cmp.Diff(want, mustGet(t, s, want.ID), taskCmp); diff != "" {
			t.Errorf("GetTask(%q) after reopening (-want +got):\n%s", want.ID, diff)
		}
	}
	unfinished, err := s.ListUnfinished(ctx)
	if err != nil {
		t.Fatalf("ListUnfinished() after reopening = %v, want nil", err)
	}
	if diff := cmp.Diff(keep(tasks, store.StateQueued, store.StateLeased), unfinished, taskCmp); diff != "" {
		t.Errorf("ListUnfinished() after reopening (-want +got):\n%s", diff)
	}
	all, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatalf("ListTasks() after reopening = %v, want nil", err)
	}
	if diff := cmp.Diff(reversed(tasks), all, taskCmp); diff != "" {
		t.Errorf("ListTasks() after reopening (-want +got):\n%s", diff)
	}

	// The reopened store goes on where the first stopped.
	dup := tasks[0]
	checkErr(t, call("CreateTask", dup.ID), s.CreateTask(ctx, newTask(dup.ID, base)), store.ErrExists)
	leased := keep(tasks, store.StateLeased)[0]
	checkErr(t, call("Complete", leased.ID, "stale"),
		s.Complete(ctx, leased.ID, "stale", store.Final{State: store.StateSucceeded, Code: "OK"}), store.ErrConflict)
	checkErr(t, call("Complete", leased.ID, leased.LeaseID),
		s.Complete(ctx, leased.ID, leased.LeaseID, store.Final{State: store.StateSucceeded, Code: "OK"}), nil)
	queued := keep(tasks, store.StateQueued)[0]
	checkErr(t, call("Claim", queued.ID), s.Claim(ctx, queued.ID, leaseFor(queued.ID)), nil)
}

func testClosed(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	put(t, s, newTask("before-close", base), store.StateLeased)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	for method, err := range eachMethod(t.Context(), s, "before-close") {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want %v", method, err, store.ErrClosed)
		}
	}
	if err := s.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close() = %v, want %v", err, store.ErrClosed)
	}
}
