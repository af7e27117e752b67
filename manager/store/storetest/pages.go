package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/manager/store"
)

// testListTasksPages checks Filter.After: pages of any size, each starting
// after the last task of the previous one (store.CursorOf), list every
// task exactly once and in the order of one unpaged list, with and without
// a state or scope filter, also when tasks share a creation instant (then
// the id orders them). A task created while paging is not in the later
// pages, and a cursor that names no stored task still starts at its place.
func testListTasksPages(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	listFixture(t, s)
	// Four tasks of one instant, between the fixture's 3rd and 4th second,
	// two of them in a scope.
	tie := base.Add(3500 * time.Millisecond)
	for i, id := range []string{"tie-c", "tie-a", "tie-d", "tie-b"} {
		task := newTask(id, tie)
		if i%2 == 0 {
			task.Scope = store.Scope{Account: "acme", Org: "pay"}
		}
		put(t, s, task, store.StateQueued)
	}

	filters := []struct {
		name   string
		filter store.Filter
	}{
		{"all", store.Filter{}},
		{"queued", store.Filter{States: []store.State{store.StateQueued}}},
		{"final", store.Filter{States: []store.State{store.StateSucceeded, store.StateFailed}}},
		{"scope", store.Filter{Scope: store.Scope{Account: "acme", Org: "pay"}}},
	}
	for _, ft := range filters {
		for _, size := range []int{1, 2, 3, 5, 100} {
			// Not parallel: each run adds a task the others would see
			// appear between their unpaged list and their pages.
			t.Run(fmt.Sprintf("%s/%d", ft.name, size), func(t *testing.T) {
				all, err := s.ListTasks(t.Context(), ft.filter)
				if err != nil {
					t.Fatalf("ListTasks(%+v) = %v, want nil", ft.filter, err)
				}
				got := pageAll(t, s, ft.filter, size)
				if diff := cmp.Diff(ids(all), got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("pages of %d of %+v, ids (-one list +pages):\n%s", size, ft.filter, diff)
				}
			})
		}
	}

	t.Run("cursor of no task", func(t *testing.T) {
		// Between the tied tasks' instant and the fixture's 4th second:
		// the tied tasks come next, then the older ones.
		f := store.Filter{After: &store.Cursor{CreatedAt: base.Add(3700 * time.Millisecond), ID: "gone"}, Limit: 5}
		got, err := s.ListTasks(t.Context(), f)
		if err != nil {
			t.Fatalf("ListTasks(%+v) = %v, want nil", f, err)
		}
		want := []string{"tie-d", "tie-c", "tie-b", "tie-a", string(rune('z'-3)) + "-list"}
		if diff := cmp.Diff(want, ids(got)); diff != "" {
			t.Errorf("ListTasks(%+v) ids (-want +got):\n%s", f, diff)
		}
		// After the oldest task: nothing.
		f = store.Filter{After: &store.Cursor{CreatedAt: base, ID: string(rune('z')) + "-list"}}
		if got, err := s.ListTasks(t.Context(), f); err != nil || len(got) != 0 {
			t.Errorf("ListTasks(after the oldest) = %v, %v, want no tasks, nil", ids(got), err)
		}
	})
}

// pageAll lists f in pages of size and returns the ids of every page in
// order, checking that no page is larger than size. After the first page
// it creates a newer task, which the later pages must not hold.
func pageAll(t *testing.T, s store.Store, f store.Filter, size int) []string {
	t.Helper()
	var out []string
	f.Limit = size
	for page := 0; ; page++ {
		got, err := s.ListTasks(t.Context(), f)
		if err != nil {
			t.Fatalf("ListTasks(%+v) = %v, want nil", f, err)
		}
		if len(got) > size {
			t.Fatalf("ListTasks(%+v) = %d tasks, want at most %d", f, len(got), size)
		}
		out = append(out, ids(got)...)
		if len(got) < size {
			return out
		}
		if page == 0 {
			put(t, s, newTask("late-"+t.Name(), base.Add(time.Hour)), store.StateQueued)
		}
		c := store.CursorOf(got[len(got)-1])
		f.After = &c
	}
}
