package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// checkDuplicate fails t unless err is a *store.DuplicateRequestError
// that wraps store.ErrExists and holds want (compared as stored).
func checkDuplicate(t *testing.T, what string, err error, want *store.Task) {
	t.Helper()
	var dup *store.DuplicateRequestError
	switch {
	case !errors.As(err, &dup):
		t.Errorf("%s = %v, want a *store.DuplicateRequestError", what, err)
		return
	case !errors.Is(err, store.ErrExists):
		t.Errorf("%s = %v, want it to wrap %v", what, err, store.ErrExists)
	case dup.Task == nil:
		t.Errorf("%s: DuplicateRequestError without the existing task", what)
		return
	}
	if diff := cmp.Diff(want, dup.Task, taskCmp); diff != "" {
		t.Errorf("%s: DuplicateRequestError.Task is not the existing task (-want +got):\n%s", what, diff)
	}
}

// checkAbsent fails t unless no task has id.
func checkAbsent(t *testing.T, s store.Store, id string) {
	t.Helper()
	if got, err := s.GetTask(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTask(%q) = %+v, %v, want %v: the refused task was stored", id, got, err, store.ErrNotFound)
	}
}

// testRequestDuplicate creates a task under a request that a task in
// each state holds: nothing is stored, and the error holds the existing
// task whatever its state, so a retry finds it.
func testRequestDuplicate(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	for _, st := range []store.State{store.StateQueued, store.StateLeased, store.StateSucceeded, store.StateFailed} {
		t.Run(string(st), func(t *testing.T) {
			t.Parallel()
			orig := put(t, s, newTask("first-"+string(st), base), st)
			// A retry: another task id, the same request. Kind, payload
			// and hash differ too: the store compares owner and id only.
			retry := newTask("retry-"+string(st), base.Add(time.Second))
			retry.Kind = "secret.delete"
			retry.Request = store.Request{Owner: orig.Request.Owner, ID: orig.Request.ID, Hash: []byte("another hash")}
			err := s.CreateTask(t.Context(), retry)
			checkDuplicate(t, call("CreateTask", retry.ID, retry.Request.ID), err, orig)
			checkAbsent(t, s, retry.ID)
			checkUnchanged(t, s, orig)
		})
	}
	t.Run("id taken first", func(t *testing.T) {
		t.Parallel()
		// Both the id and the request are taken: the id wins, a plain
		// ErrExists, as for any taken id.
		orig := put(t, s, newTask("both-taken", base), store.StateQueued)
		err := s.CreateTask(t.Context(), newTask(orig.ID, base))
		checkErr(t, call("CreateTask", orig.ID), err, store.ErrExists)
		checkUnchanged(t, s, orig)
	})
}

// testRequestKeys checks what makes two requests the same: owner and id,
// byte for byte, and only when the id is not empty.
func testRequestKeys(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	create := func(id string, r store.Request) error {
		task := newTask(id, base)
		task.Request = r
		return s.CreateTask(ctx, task)
	}
	distinct := []store.Request{
		{Owner: "acme:ci", ID: "deploy-1"},
		{Owner: "globex:ci", ID: "deploy-1"}, // another tenant, the same id
		{Owner: "acme:ci", ID: "deploy-2"},
		{Owner: "acme:ci", ID: "Deploy-1"},  // case matters
		{Owner: "", ID: "deploy-1"},         // an empty owner is an owner
		{Owner: "acme:c", ID: "ideploy-1"},  // the same bytes, split elsewhere
		{Owner: "acme:ci", ID: "deploy-1 "}, // no trimming
	}
	for i, r := range distinct {
		if err := create(fmt.Sprintf("distinct-%d", i), r); err != nil {
			t.Errorf("CreateTask(request %+v) = %v, want nil: no other task has it", r, err)
		}
	}
	for i, r := range distinct {
		err := create(fmt.Sprintf("again-%d", i), r)
		checkDuplicate(t, call("CreateTask", "again", r.Owner, r.ID), err, mustGet(t, s, fmt.Sprintf("distinct-%d", i)))
	}
	// Without an id nothing is indexed: any number of tasks, owner and
	// hash round-tripping as given.
	for i := range 3 {
		id := fmt.Sprintf("no-request-id-%d", i)
		r := store.Request{Owner: "acme:ci", Hash: []byte("h")}
		if err := create(id, r); err != nil {
			t.Fatalf("CreateTask(%q, no request id) = %v, want nil", id, err)
		}
		if got := mustGet(t, s, id).Request; !cmp.Equal(got, r, taskCmp) {
			t.Errorf("GetTask(%q).Request = %+v, want %+v", id, got, r)
		}
	}
}

// testRequestDurable checks that the request index survives a reopen.
func testRequestDurable(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := mustOpenDir(t, open, dir)
	orig := put(t, s, newTask("durable-request", base), store.StateSucceeded)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	s = mustOpenDir(t, open, dir)
	if diff := cmp.Diff(orig, mustGet(t, s, orig.ID), taskCmp); diff != "" {
		t.Errorf("GetTask(%q) after reopening (-want +got):\n%s", orig.ID, diff)
	}
	retry := newTask("durable-retry", base)
	retry.Request = orig.Request
	checkDuplicate(t, call("CreateTask", retry.ID, retry.Request.ID)+" after reopening", s.CreateTask(t.Context(), retry), orig)
	checkAbsent(t, s, retry.ID)
}

// testConcurrentRequest races callers that submit one request under
// different task ids, as a caller retrying while its first call still
// runs: exactly one task is created, and every other caller is told its id.
func testConcurrentRequest(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	r := store.Request{Owner: "acme:ci", ID: "raced", Hash: []byte("h")}
	id := func(i int) string { return fmt.Sprintf("raced-%02d", i) }
	errs := race(racers, func(i int) error {
		task := newTask(id(i), base)
		task.Request = r
		return s.CreateTask(t.Context(), task)
	})
	winner := oneWinner(t, "CreateTask with one request", errs, store.ErrExists)
	if winner < 0 {
		return
	}
	won := mustGet(t, s, id(winner))
	for i, err := range errs {
		if i == winner {
			continue
		}
		checkDuplicate(t, fmt.Sprintf("racer %d: CreateTask(%q)", i, id(i)), err, won)
		checkAbsent(t, s, id(i))
	}
}
