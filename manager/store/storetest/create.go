package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

func testCreateGet(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	tests := []struct {
		name string
		task *store.Task
		want *store.Task // nil: the task itself
	}{
		{name: "all fields", task: func() *store.Task {
			task := newTask("all-fields", base)
			// LeaseID, Delegate, Code and Outcome round-trip through
			// Claim and Complete (see testClaim, testComplete).
			task.Attempt = 2
			task.UpdatedAt = base.Add(time.Millisecond)
			return task
		}()},
		{name: "binary payload and unicode", task: func() *store.Task {
			task := newTask("ünïcode/ταυτότητα+=.@-", base)
			task.Kind = "secret.update"
			task.Selectors = []string{"région", "zone-✓"}
			task.Payload = binary
			return task
		}()},
		{name: "zero times stay zero", task: func() *store.Task {
			task := newTask("zero-times", base)
			task.Deadline = time.Time{}
			task.QueueDeadline = time.Time{}
			return task
		}()},
		{name: "no scope", task: func() *store.Task {
			task := newTask("no-scope", base)
			task.Kind = "ping"
			task.Scope = store.Scope{}
			return task
		}()},
		{name: "no order key", task: func() *store.Task {
			task := newTask("unordered", base)
			task.OrderKey = ""
			return task
		}()},
		{name: "account scope", task: func() *store.Task {
			task := newTask("account-scope", base)
			task.Scope = store.Scope{Account: "acme"}
			return task
		}()},
		{name: "empty slices", task: func() *store.Task {
			task := newTask("empty", base)
			task.Selectors = nil
			task.Payload = nil
			task.MaxAttempts = 0
			return task
		}()},
		{name: "large payload", task: func() *store.Task {
			task := newTask("large", base)
			task.Payload = make([]byte, 1<<20)
			for i := range task.Payload {
				task.Payload[i] = byte(i * 7)
			}
			return task
		}()},
		{name: "state is always queued", task: func() *store.Task {
			task := newTask("state-given", base)
			task.State = store.StateSucceeded
			return task
		}(), want: func() *store.Task {
			task := newTask("state-given", base)
			task.State = store.StateQueued
			return task
		}()},
		{name: "empty state", task: func() *store.Task {
			task := newTask("state-empty", base)
			task.State = ""
			return task
		}(), want: newTask("state-empty", base)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mustCreate(t, s, tt.task)
			want := tt.want
			if want == nil {
				want = tt.task
			}
			got := mustGet(t, s, tt.task.ID)
			if diff := cmp.Diff(want, got, taskCmp); diff != "" {
				t.Errorf("GetTask(%q) mismatch (-want +got):\n%s", tt.task.ID, diff)
			}
			if !want.Deadline.IsZero() {
				return
			}
			if !got.Deadline.IsZero() || !got.QueueDeadline.IsZero() {
				t.Errorf("GetTask(%q) deadlines = %v, %v, want zero times", tt.task.ID, got.Deadline, got.QueueDeadline)
			}
		})
	}
}

func testCreateDefaults(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)

	t.Run("zero CreatedAt is now", func(t *testing.T) {
		t.Parallel()
		task := newTask("no-created", base)
		task.CreatedAt = time.Time{}
		task.UpdatedAt = time.Time{}
		before := time.Now()
		mustCreate(t, s, task)
		after := time.Now()
		got := mustGet(t, s, task.ID)
		checkRecent(t, "CreatedAt", got.CreatedAt, before, after)
		if !got.UpdatedAt.Equal(got.CreatedAt) {
			t.Errorf("UpdatedAt = %v, want CreatedAt %v", got.UpdatedAt, got.CreatedAt)
		}
	})
	t.Run("zero UpdatedAt is CreatedAt", func(t *testing.T) {
		t.Parallel()
		task := newTask("no-updated", base)
		task.UpdatedAt = time.Time{}
		mustCreate(t, s, task)
		if got := mustGet(t, s, task.ID); !got.UpdatedAt.Truncate(time.Millisecond).Equal(base) {
			t.Errorf("UpdatedAt = %v, want %v", got.UpdatedAt, base)
		}
	})
}

func testCreateNotRetained(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	task := newTask("aliasing", base)
	want := newTask("aliasing", base)
	mustCreate(t, s, task)
	task.Payload[0] = 'X'
	task.Selectors[0] = "changed"
	task.Kind = "changed"

	got := mustGet(t, s, want.ID)
	if diff := cmp.Diff(want, got, taskCmp); diff != "" {
		t.Errorf("GetTask(%q) after changing the created task (-want +got):\n%s", want.ID, diff)
	}
	got.Payload[0] = 'Y'
	got.Selectors[0] = "changed"
	if diff := cmp.Diff(want, mustGet(t, s, want.ID), taskCmp); diff != "" {
		t.Errorf("GetTask(%q) after changing a returned task (-want +got):\n%s", want.ID, diff)
	}
}

func testCreateExists(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	for _, st := range []store.State{store.StateQueued, store.StateLeased, store.StateSucceeded, store.StateFailed} {
		t.Run(string(st), func(t *testing.T) {
			t.Parallel()
			orig := put(t, s, newTask("exists-"+string(st), base), st)
			dup := newTask(orig.ID, base.Add(time.Hour))
			dup.Kind = "secret.delete"
			err := s.CreateTask(t.Context(), dup)
			checkErr(t, call("CreateTask", dup.ID), err, store.ErrExists)
			checkUnchanged(t, s, orig)
		})
	}
}

func testGetNotFound(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	mustCreate(t, s, newTask("present", base))
	for _, id := range []string{"absent", "presen", "present-", "PRESENT"} {
		got, err := s.GetTask(t.Context(), id)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetTask(%q) = %+v, %v, want %v", id, got, err, store.ErrNotFound)
		}
	}
}
