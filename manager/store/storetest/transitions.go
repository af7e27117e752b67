package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// currentLease picks the lease put gave the task; fixedLease picks lease.
func currentLease(id string) string { return leaseFor(id).ID }

func fixedLease(lease string) func(string) string { return func(string) string { return lease } }

func testClaim(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	tests := []struct {
		name    string
		state   store.State // "": no such task
		wantErr error
	}{
		{"queued", store.StateQueued, nil},
		{"leased", store.StateLeased, store.ErrConflict},
		{"succeeded", store.StateSucceeded, store.ErrConflict},
		{"failed", store.StateFailed, store.ErrConflict},
		{"unknown", "", store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := "claim-" + tt.name
			var before *store.Task
			if tt.state != "" {
				before = put(t, s, newTask(id, base), tt.state)
			}
			l := store.Lease{ID: "new-lease-" + id, Delegate: "new-delegate", Attempt: 2}
			start := time.Now()
			err := s.Claim(t.Context(), id, l)
			end := time.Now()
			checkErr(t, call("Claim", id, l.ID), err, tt.wantErr)
			if before == nil {
				return
			}
			if tt.wantErr != nil {
				checkUnchanged(t, s, before)
				return
			}
			want := *before
			want.State = store.StateLeased
			want.LeaseID = l.ID
			want.Delegate = l.Delegate
			want.Attempt = l.Attempt
			got := mustGet(t, s, id)
			if diff := cmp.Diff(&want, got, taskCmp, ignoreUpdated); diff != "" {
				t.Errorf("GetTask(%q) after Claim (-want +got):\n%s", id, diff)
			}
			checkRecent(t, "UpdatedAt after Claim", got.UpdatedAt, start, end)
		})
	}
}

func testRequeue(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	tests := []struct {
		name    string
		state   store.State // "": no such task
		lease   func(id string) string
		wantErr error
	}{
		{"current lease", store.StateLeased, currentLease, nil},
		{"stale lease", store.StateLeased, fixedLease("stale"), store.ErrConflict},
		{"empty lease", store.StateLeased, fixedLease(""), store.ErrConflict},
		{"queued", store.StateQueued, currentLease, store.ErrConflict},
		{"queued empty lease", store.StateQueued, fixedLease(""), store.ErrConflict},
		{"succeeded", store.StateSucceeded, currentLease, store.ErrConflict},
		{"failed", store.StateFailed, fixedLease(""), store.ErrConflict},
		{"unknown", "", fixedLease("lease"), store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := "requeue-" + tt.name
			var before *store.Task
			if tt.state != "" {
				before = put(t, s, newTask(id, base), tt.state)
			}
			lease := tt.lease(id)
			start := time.Now()
			err := s.Requeue(t.Context(), id, lease)
			end := time.Now()
			checkErr(t, call("Requeue", id, lease), err, tt.wantErr)
			if before == nil {
				return
			}
			if tt.wantErr != nil {
				checkUnchanged(t, s, before)
				return
			}
			want := *before
			want.State = store.StateQueued
			want.LeaseID = ""
			want.Delegate = ""
			got := mustGet(t, s, id)
			if diff := cmp.Diff(&want, got, taskCmp, ignoreUpdated); diff != "" {
				t.Errorf("GetTask(%q) after Requeue (-want +got):\n%s", id, diff)
			}
			checkRecent(t, "UpdatedAt after Requeue", got.UpdatedAt, start, end)
		})
	}
}

func testComplete(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	// Complete replaces the payload: with what the final says, or with
	// nothing.
	ok := store.Final{State: store.StateSucceeded, Code: "OK", Outcome: []byte("\x00outcome\xff"), Payload: []byte("\x00kept\xff")}
	failed := store.Final{State: store.StateFailed, Code: "ACCESS_DENIED", Outcome: []byte("denied")}
	tests := []struct {
		name    string
		state   store.State // "": no such task
		lease   func(id string) string
		final   store.Final
		wantErr error
	}{
		{"leased current lease succeeded", store.StateLeased, currentLease, ok, nil},
		{"leased current lease failed", store.StateLeased, currentLease, failed, nil},
		{"leased stale lease", store.StateLeased, fixedLease("stale"), ok, store.ErrConflict},
		{"leased empty lease", store.StateLeased, fixedLease(""), failed, nil},
		{"queued empty lease", store.StateQueued, fixedLease(""), failed, nil},
		{"queued with a lease", store.StateQueued, currentLease, ok, store.ErrConflict},
		{"succeeded same lease", store.StateSucceeded, currentLease, ok, store.ErrConflict},
		{"succeeded empty lease", store.StateSucceeded, fixedLease(""), failed, store.ErrConflict},
		{"failed empty lease", store.StateFailed, fixedLease(""), failed, store.ErrConflict},
		{"unknown", "", fixedLease(""), failed, store.ErrNotFound},
		{"unknown with a lease", "", fixedLease("lease"), ok, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := "complete-" + tt.name
			var before *store.Task
			if tt.state != "" {
				before = put(t, s, newTask(id, base), tt.state)
			}
			lease := tt.lease(id)
			start := time.Now()
			err := s.Complete(t.Context(), id, lease, tt.final)
			end := time.Now()
			checkErr(t, call("Complete", id, lease, tt.final.Code), err, tt.wantErr)
			if before == nil {
				return
			}
			if tt.wantErr != nil {
				checkUnchanged(t, s, before)
				return
			}
			// LeaseID and Delegate are kept once final.
			want := *before
			want.State = tt.final.State
			want.Code = tt.final.Code
			want.Outcome = tt.final.Outcome
			want.Payload = tt.final.Payload
			got := mustGet(t, s, id)
			if diff := cmp.Diff(&want, got, taskCmp, ignoreUpdated); diff != "" {
				t.Errorf("GetTask(%q) after Complete (-want +got):\n%s", id, diff)
			}
			checkRecent(t, "UpdatedAt after Complete", got.UpdatedAt, start, end)
		})
	}
}

func testCompleteTwice(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	const id = "twice"
	put(t, s, newTask(id, base), store.StateLeased)
	lease := leaseFor(id).ID
	first := store.Final{State: store.StateSucceeded, Code: "OK", Outcome: []byte("first")}
	if err := s.Complete(ctx, id, lease, first); err != nil {
		t.Fatalf("Complete(%q, %q) = %v, want nil", id, lease, err)
	}
	done := mustGet(t, s, id)

	second := store.Final{State: store.StateFailed, Code: "TIMEOUT", Outcome: []byte("second")}
	for _, l := range []string{lease, ""} {
		err := s.Complete(ctx, id, l, second)
		checkErr(t, call("Complete (again)", id, l), err, store.ErrConflict)
	}
	checkUnchanged(t, s, done)
}

// testLifecycle walks one task through a lost lease: claim, requeue, claim
// again by another delegate, a stale result from the first, the real one.
func testLifecycle(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	const id = "lifecycle"
	task := newTask(id, base)
	mustCreate(t, s, task)

	first := store.Lease{ID: "lease-1", Delegate: "delegate-a", Attempt: 1}
	second := store.Lease{ID: "lease-2", Delegate: "delegate-b", Attempt: 2}
	mustClaim(t, s, id, first)
	if err := s.Requeue(ctx, id, first.ID); err != nil {
		t.Fatalf("Requeue(%q, %q) = %v, want nil", id, first.ID, err)
	}
	if got := mustGet(t, s, id); got.Attempt != first.Attempt {
		t.Errorf("Attempt after Requeue = %d, want %d (kept)", got.Attempt, first.Attempt)
	}
	mustClaim(t, s, id, second)

	stale := store.Final{State: store.StateSucceeded, Code: "OK", Outcome: []byte("stale")}
	checkErr(t, call("Complete", id, first.ID), s.Complete(ctx, id, first.ID, stale), store.ErrConflict)
	checkErr(t, call("Requeue", id, first.ID), s.Requeue(ctx, id, first.ID), store.ErrConflict)

	final := store.Final{State: store.StateSucceeded, Code: "OK", Outcome: []byte("fresh"), Payload: []byte("what is kept")}
	if err := s.Complete(ctx, id, second.ID, final); err != nil {
		t.Fatalf("Complete(%q, %q) = %v, want nil", id, second.ID, err)
	}
	want := *task
	want.State = store.StateSucceeded
	want.Attempt = second.Attempt
	want.LeaseID = second.ID
	want.Delegate = second.Delegate
	want.Code = final.Code
	want.Outcome = final.Outcome
	want.Payload = final.Payload
	if diff := cmp.Diff(&want, mustGet(t, s, id), taskCmp, ignoreUpdated); diff != "" {
		t.Errorf("GetTask(%q) at the end (-want +got):\n%s", id, diff)
	}
}
