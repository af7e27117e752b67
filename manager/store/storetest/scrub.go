package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/smdelegate/smdelegate/manager/store"
)

// testScrubFinished: a task made final through Complete holds the payload
// Complete was given, across a reopen, and ScrubFinished never passes it,
// nor an unfinished task, to scrub: through the interface there is
// nothing to migrate. (Each implementation tests the migration of what an
// older version stored in its own tests.)
func testScrubFinished(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := mustOpenDir(t, open, dir)
	states := []store.State{store.StateQueued, store.StateLeased, store.StateSucceeded, store.StateFailed}
	for _, st := range states {
		put(t, s, newTask("scrub-"+string(st), base), st)
	}
	scrub := func(t *testing.T, s store.Store) {
		t.Helper()
		var passed []string
		n, err := s.ScrubFinished(t.Context(), func(id string, p []byte) ([]byte, error) {
			passed = append(passed, id)
			return nil, nil
		})
		if err != nil || n != 0 || len(passed) != 0 {
			t.Errorf("ScrubFinished() = %d, %v, and passed %q, want 0, nil and none", n, err, passed)
		}
	}
	check := func(t *testing.T, s store.Store) {
		t.Helper()
		for _, st := range states {
			id := "scrub-" + string(st)
			want := "payload of " + id
			if st.Final() {
				want = "kept of " + id
			}
			if got := mustGet(t, s, id); string(got.Payload) != want {
				t.Errorf("GetTask(%q).Payload = %q, want %q", id, got.Payload, want)
			}
		}
	}
	scrub(t, s)
	check(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s = mustOpenDir(t, open, dir)
	check(t, s)
	scrub(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.ScrubFinished(ctx, func(_ string, p []byte) ([]byte, error) { return p, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("ScrubFinished(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
}
