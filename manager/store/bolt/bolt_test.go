package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	"github.com/smdelegate/smdelegate/manager/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.RunConformance(t, func(t *testing.T, dir string) store.Store {
		return MustOpen(t, dir, bolt.Options{})
	})
}

// MustOpen opens the database in dir, failing tb if it cannot. The caller
// closes it.
func MustOpen(tb testing.TB, dir string, opts bolt.Options) *bolt.DB {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(dir, bolt.FileName), opts)
	if err != nil {
		tb.Fatalf("Open(%q) = %v", dir, err)
	}
	return db
}

// mustOpenClosed is MustOpen with a Close at the end of the test.
func mustOpenClosed(tb testing.TB, dir string, opts bolt.Options) *bolt.DB {
	tb.Helper()
	db := MustOpen(tb, dir, opts)
	tb.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("Close() = %v", err)
		}
	})
	return db
}

func TestOpenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := mustOpenClosed(t, dir, bolt.Options{})

	// flock locks conflict between two opens of the file even in one
	// process, so this stands in for a second smd on the same data dir.
	start := time.Now()
	second, err := bolt.Open(first.Path(), bolt.Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, bolt.ErrInUse) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open(%q) = %v, want %v", first.Path(), err, bolt.ErrInUse)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("second Open took %v, want about the 100ms lock timeout", waited)
	}
	if msg := err.Error(); !strings.Contains(msg, first.Path()) || !strings.Contains(msg, "in use") {
		t.Errorf("second Open error %q, want it to name the file and say it is in use", msg)
	}

	// Once the first lets go, the file opens.
	if err := first.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	MustOpen(t, dir, bolt.Options{LockTimeout: -1}).Close()
}

func TestOpenCreatesDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	mustOpenClosed(t, dir, bolt.Options{})
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
	ctx := t.Context()
	if err := db.CreateTask(ctx, &store.Task{}); err == nil {
		t.Error("CreateTask(empty id) = nil, want an error")
	}
	if err := db.CreateTask(ctx, &store.Task{ID: "t"}); err != nil {
		t.Fatalf("CreateTask(%q) = %v", "t", err)
	}
	if err := db.Claim(ctx, "t", store.Lease{Delegate: "d", Attempt: 1}); err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("Claim(empty lease id) = %v, want an invalid-argument error", err)
	}
	if err := db.Complete(ctx, "t", "", store.Final{State: store.StateLeased}); err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("Complete(state leased) = %v, want an invalid-argument error", err)
	}
	if got, err := db.GetTask(ctx, "t"); err != nil || got.State != store.StateQueued {
		t.Errorf("GetTask(%q) = %+v, %v, want it still queued", "t", got, err)
	}
}

func TestContextDone(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := db.CreateTask(ctx, &store.Task{ID: "t"}); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateTask(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if _, err := db.GetTask(t.Context(), "t"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTask(%q) = %v, want %v: a cancelled create must not persist", "t", err, store.ErrNotFound)
	}
}

// finish creates n tasks named prefix-NNNN, created a microsecond apart from
// created on, and fails them at once, so their UpdatedAt is now.
func finish(t *testing.T, db *bolt.DB, prefix string, n int, created time.Time) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		task := &store.Task{ID: id, Kind: "ping", Request: store.Request{Owner: "op", ID: "req-" + id}}
		if !created.IsZero() {
			task.CreatedAt = created.Add(time.Duration(i) * time.Microsecond)
		}
		if err := db.CreateTask(t.Context(), task); err != nil {
			t.Fatalf("CreateTask(%q) = %v", id, err)
		}
		if err := db.Complete(t.Context(), id, "", store.Final{State: store.StateFailed, Code: "TIMEOUT"}); err != nil {
			t.Fatalf("Complete(%q) = %v", id, err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestPrune(t *testing.T) {
	t.Parallel()
	for _, chunk := range []int{0, 2} { // 0: the default
		t.Run(fmt.Sprintf("chunk %d", chunk), func(t *testing.T) {
			t.Parallel()
			db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
			if chunk > 0 {
				db.SetPruneChunk(chunk)
			}
			testPrune(t, db)
		})
	}
}

func testPrune(t *testing.T, db *bolt.DB) {
	ctx := t.Context()
	old := time.Now().Add(-48 * time.Hour)

	// Created long ago and finished before the cutoff: pruned.
	pruned := finish(t, db, "old-done", 5, old)
	// Created long ago and not finished: kept, whatever their age.
	for _, id := range []string{"old-queued", "old-leased", "old-done-late"} {
		task := &store.Task{ID: id, CreatedAt: old.Add(time.Second), Request: store.Request{Owner: "op", ID: "req-" + id}}
		if err := db.CreateTask(ctx, task); err != nil {
			t.Fatalf("CreateTask(%q) = %v", id, err)
		}
	}
	if err := db.Claim(ctx, "old-leased", store.Lease{ID: "l", Delegate: "d", Attempt: 1}); err != nil {
		t.Fatalf("Claim = %v", err)
	}

	// Everything finished just now, so a cutoff a day back prunes nothing:
	// Prune goes by when a task finished, not when it was created.
	if n, err := db.Prune(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("Prune(a day ago) = %d, %v, want 0, nil", n, err)
	}

	cutoff := time.Now()
	time.Sleep(2 * time.Millisecond) // so that later UpdatedAt are after cutoff
	// Created long ago but finished after the cutoff, and created after
	// it: kept.
	if err := db.Complete(ctx, "old-done-late", "", store.Final{State: store.StateSucceeded, Code: "OK"}); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	recent := finish(t, db, "recent-done", 3, time.Time{})

	n, err := db.Prune(ctx, cutoff)
	if err != nil || n != len(pruned) {
		t.Fatalf("Prune(cutoff) = %d, %v, want %d, nil", n, err, len(pruned))
	}
	for _, id := range pruned {
		if _, err := db.GetTask(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetTask(%q) after Prune = %v, want %v", id, err, store.ErrNotFound)
		}
	}
	all, err := db.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatalf("ListTasks() = %v", err)
	}
	var want []string
	for i := len(recent) - 1; i >= 0; i-- {
		want = append(want, recent[i])
	}
	want = append(want, "old-queued", "old-leased", "old-done-late") // same CreatedAt: id descending
	if diff := cmp.Diff(want, ids(all)); diff != "" {
		t.Errorf("ListTasks() after Prune (-want +got):\n%s", diff)
	}
	unfinished, err := db.ListUnfinished(ctx)
	if err != nil {
		t.Fatalf("ListUnfinished() = %v", err)
	}
	if diff := cmp.Diff([]string{"old-leased", "old-queued"}, ids(unfinished)); diff != "" {
		t.Errorf("ListUnfinished() after Prune (-want +got):\n%s", diff)
	}
	if n, err := db.Prune(ctx, cutoff); err != nil || n != 0 {
		t.Errorf("second Prune(cutoff) = %d, %v, want 0, nil", n, err)
	}

	// A pruned task's request id is free again; a kept task's is not.
	for _, id := range pruned {
		r := store.Request{Owner: "op", ID: "req-" + id}
		if err := db.CreateTask(ctx, &store.Task{ID: "again-" + id, Request: r}); err != nil {
			t.Errorf("CreateTask(request of pruned %q) = %v, want nil", id, err)
		}
	}
	for _, id := range append([]string{"old-queued", "old-leased", "old-done-late"}, recent...) {
		r := store.Request{Owner: "op", ID: "req-" + id}
		err := db.CreateTask(ctx, &store.Task{ID: "again-" + id, Request: r})
		var dup *store.DuplicateRequestError
		if !errors.As(err, &dup) || dup.Task.ID != id {
			t.Errorf("CreateTask(request of kept %q) = %v, want a DuplicateRequestError naming it", id, err)
		}
	}
}

func TestPruneCancelled(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
	finish(t, db, "done", 3, time.Now().Add(-time.Hour))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := db.Prune(ctx, time.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("Prune(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
}

func TestKeepFinished(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{KeepFinished: time.Millisecond, PruneInterval: 5 * time.Millisecond})
	ctx := t.Context()
	if err := db.CreateTask(ctx, &store.Task{ID: "queued"}); err != nil {
		t.Fatal(err)
	}
	finish(t, db, "done", 1, time.Time{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := db.GetTask(ctx, "done-0000")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetTask(%q) = %v after 10s, want it pruned", "done-0000", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := db.GetTask(ctx, "queued"); err != nil {
		t.Errorf("GetTask(%q) = %v, want the queued task kept", "queued", err)
	}
	// Close stops the loop.
	start := time.Now()
	if err := db.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close() took %v, want it to stop the prune loop promptly", d)
	}
}

func ids(tasks []*store.Task) []string {
	out := make([]string, 0, len(tasks))
	for _, t := range tasks {
		out = append(out, t.ID)
	}
	return out
}
