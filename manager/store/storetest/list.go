package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/manager/store"
)

// listFixture fills s with ten tasks created one second apart, in these
// states, inserted out of order and with ids that sort the other way round,
// so that only CreatedAt explains the order of a list. It returns the tasks
// as stored, oldest first.
func listFixture(t *testing.T, s store.Store) []*store.Task {
	t.Helper()
	states := []store.State{
		store.StateQueued, store.StateSucceeded, store.StateLeased, store.StateFailed, store.StateQueued,
		"requeued", store.StateSucceeded, store.StateLeased, store.StateQueued, store.StateFailed,
	}
	insertOrder := []int{7, 2, 9, 0, 5, 3, 8, 1, 6, 4}
	tasks := make([]*store.Task, len(states))
	for _, i := range insertOrder {
		task := newTask(string(rune('z'-i))+"-list", base.Add(time.Duration(i)*time.Second))
		if states[i] != "requeued" {
			tasks[i] = put(t, s, task, states[i])
			continue
		}
		put(t, s, task, store.StateLeased)
		if err := s.Requeue(t.Context(), task.ID, currentLease(task.ID)); err != nil {
			t.Fatalf("Requeue(%q) = %v, want nil", task.ID, err)
		}
		tasks[i] = mustGet(t, s, task.ID)
	}
	return tasks
}

// keep returns the tasks, in order, whose state is one of states.
func keep(tasks []*store.Task, states ...store.State) []*store.Task {
	var out []*store.Task
	for _, task := range tasks {
		if slices.Contains(states, task.State) {
			out = append(out, task)
		}
	}
	return out
}

func reversed(tasks []*store.Task) []*store.Task {
	out := slices.Clone(tasks)
	slices.Reverse(out)
	return out
}

func testListUnfinished(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	tasks := listFixture(t, s)

	want := keep(tasks, store.StateQueued, store.StateLeased)
	got, err := s.ListUnfinished(t.Context())
	if err != nil {
		t.Fatalf("ListUnfinished() = %v, want nil", err)
	}
	if diff := cmp.Diff(want, got, taskCmp); diff != "" {
		t.Errorf("ListUnfinished() mismatch (-want +got):\n%s", diff)
	}

	// Completing the oldest unfinished task takes it off the list.
	oldest := want[0]
	if err := s.Complete(t.Context(), oldest.ID, "", store.Final{State: store.StateFailed, Code: "TIMEOUT"}); err != nil {
		t.Fatalf("Complete(%q) = %v, want nil", oldest.ID, err)
	}
	got, err = s.ListUnfinished(t.Context())
	if err != nil {
		t.Fatalf("ListUnfinished() = %v, want nil", err)
	}
	if diff := cmp.Diff(ids(want[1:]), ids(got)); diff != "" {
		t.Errorf("ListUnfinished() after Complete(%q) ids (-want +got):\n%s", oldest.ID, diff)
	}
}

func testListTasks(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	newest := reversed(listFixture(t, s))

	tests := []struct {
		name   string
		filter store.Filter
		want   []*store.Task
	}{
		{"all", store.Filter{}, newest},
		{"queued", store.Filter{States: []store.State{store.StateQueued}}, keep(newest, store.StateQueued)},
		{"leased", store.Filter{States: []store.State{store.StateLeased}}, keep(newest, store.StateLeased)},
		{"succeeded", store.Filter{States: []store.State{store.StateSucceeded}}, keep(newest, store.StateSucceeded)},
		{"unfinished", store.Filter{States: []store.State{store.StateLeased, store.StateQueued}},
			keep(newest, store.StateQueued, store.StateLeased)},
		{"final", store.Filter{States: []store.State{store.StateSucceeded, store.StateFailed}},
			keep(newest, store.StateSucceeded, store.StateFailed)},
		{"queued and failed", store.Filter{States: []store.State{store.StateFailed, store.StateQueued}},
			keep(newest, store.StateQueued, store.StateFailed)},
		{"limit", store.Filter{Limit: 3}, newest[:3]},
		{"limit one", store.Filter{Limit: 1}, newest[:1]},
		{"limit above count", store.Filter{Limit: 100}, newest},
		{"limit with states", store.Filter{States: []store.State{store.StateQueued}, Limit: 2},
			keep(newest, store.StateQueued)[:2]},
		{"limit with final states", store.Filter{States: []store.State{store.StateFailed}, Limit: 1},
			keep(newest, store.StateFailed)[:1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.ListTasks(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("ListTasks(%+v) = %v, want nil", tt.filter, err)
			}
			if diff := cmp.Diff(tt.want, got, taskCmp); diff != "" {
				t.Errorf("ListTasks(%+v) mismatch (-want +got):\n%s", tt.filter, diff)
			}
		})
	}
}

// testListTasksScope checks Filter.Scope: a scope keeps the tasks at it and
// below it, never those of a sibling, a parent or another account, nor
// tasks without a scope; combined with states and a limit, the limit
// counts only the tasks kept.
func testListTasksScope(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	scopes := map[string]store.Scope{
		"none":       {},
		"acme":       {Account: "acme"},
		"acme-pay":   {Account: "acme", Org: "pay"},
		"acme-pay-1": {Account: "acme", Org: "pay", Project: "one"},
		"acme-pay-2": {Account: "acme", Org: "pay", Project: "two"},
		"acme-ops":   {Account: "acme", Org: "ops"},
		"acmeco":     {Account: "acmeco"},
		"other-pay":  {Account: "other", Org: "pay"},
	}
	names := []string{"none", "acme", "acme-pay", "acme-pay-1", "acme-pay-2", "acme-ops", "acmeco", "other-pay"}
	for i, name := range names {
		task := newTask(name, base.Add(time.Duration(i)*time.Second))
		task.Scope = scopes[name]
		st := store.StateQueued
		if i%2 == 1 {
			st = store.StateSucceeded
		}
		put(t, s, task, st)
	}
	tests := []struct {
		name   string
		filter store.Filter
		want   []string // newest first
	}{
		{"no scope filter", store.Filter{}, []string{"other-pay", "acmeco", "acme-ops", "acme-pay-2", "acme-pay-1", "acme-pay", "acme", "none"}},
		{"account", store.Filter{Scope: scopes["acme"]}, []string{"acme-ops", "acme-pay-2", "acme-pay-1", "acme-pay", "acme"}},
		{"org", store.Filter{Scope: scopes["acme-pay"]}, []string{"acme-pay-2", "acme-pay-1", "acme-pay"}},
		{"project", store.Filter{Scope: scopes["acme-pay-1"]}, []string{"acme-pay-1"}},
		{"org of another account", store.Filter{Scope: scopes["other-pay"]}, []string{"other-pay"}},
		{"unknown account", store.Filter{Scope: store.Scope{Account: "nobody"}}, nil},
		{"with states", store.Filter{Scope: scopes["acme"], States: []store.State{store.StateQueued}}, []string{"acme-pay-2", "acme-pay"}},
		{"with a limit", store.Filter{Scope: scopes["acme"], Limit: 2}, []string{"acme-ops", "acme-pay-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.ListTasks(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("ListTasks(%+v) = %v, want nil", tt.filter, err)
			}
			if diff := cmp.Diff(tt.want, ids(got), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ListTasks(%+v) ids mismatch (-want +got):\n%s", tt.filter, diff)
			}
		})
	}
}

func testListEmpty(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	if got, err := s.ListUnfinished(ctx); err != nil || len(got) != 0 {
		t.Errorf("ListUnfinished() on an empty store = %v, %v, want no tasks, nil", ids(got), err)
	}
	filters := []store.Filter{{}, {Limit: 5}, {States: []store.State{store.StateQueued}}}
	for _, f := range filters {
		if got, err := s.ListTasks(ctx, f); err != nil || len(got) != 0 {
			t.Errorf("ListTasks(%+v) on an empty store = %v, %v, want no tasks, nil", f, ids(got), err)
		}
	}

	// Only final tasks: nothing unfinished.
	put(t, s, newTask("done", base), store.StateSucceeded)
	put(t, s, newTask("gave-up", base), store.StateFailed)
	if got, err := s.ListUnfinished(ctx); err != nil || len(got) != 0 {
		t.Errorf("ListUnfinished() with only final tasks = %v, %v, want no tasks, nil", ids(got), err)
	}
	f := store.Filter{States: []store.State{store.StateQueued, store.StateLeased}}
	if got, err := s.ListTasks(ctx, f); err != nil || len(got) != 0 {
		t.Errorf("ListTasks(%+v) with only final tasks = %v, %v, want no tasks, nil", f, ids(got), err)
	}
}
