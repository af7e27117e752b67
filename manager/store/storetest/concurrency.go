package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// racers is how many goroutines race for each task.
const racers = 20

// race runs fn(i) for i in [0, n) in n goroutines released together, and
// returns their errors by i.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one of errs is nil and all others are want,
// and returns the winner's index (-1 if none).
func oneWinner(t *testing.T, what string, errs []error, want error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("%s: racers %d and %d both succeeded, want exactly one", what, winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, want):
			t.Errorf("%s: racer %d = %v, want nil or %v", what, i, err, want)
		}
	}
	if winner < 0 {
		t.Errorf("%s: no racer succeeded, want exactly one", what)
	}
	return winner
}

func testConcurrentCreate(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()

	errs := race(racers, func(i int) error {
		task := newTask("same-id", base)
		task.Kind = fmt.Sprintf("kind-%d", i)
		return s.CreateTask(ctx, task)
	})
	if w := oneWinner(t, `CreateTask("same-id")`, errs, store.ErrExists); w >= 0 {
		if got := mustGet(t, s, "same-id"); got.Kind != fmt.Sprintf("kind-%d", w) {
			t.Errorf(`GetTask("same-id").Kind = %q, want the winner's "kind-%d"`, got.Kind, w)
		}
	}

	const distinct = 50
	errs = race(distinct, func(i int) error {
		return s.CreateTask(ctx, newTask(fmt.Sprintf("distinct-%02d", i), base.Add(time.Duration(i)*time.Millisecond)))
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("CreateTask(%q) = %v, want nil", fmt.Sprintf("distinct-%02d", i), err)
		}
	}
	got, err := s.ListUnfinished(ctx)
	if err != nil {
		t.Fatalf("ListUnfinished() = %v, want nil", err)
	}
	if len(got) != distinct+1 {
		t.Errorf("ListUnfinished() returned %d tasks, want %d", len(got), distinct+1)
	}
}

func testConcurrentClaim(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	const tasks = 10
	lease := func(task, racer int) store.Lease {
		return store.Lease{ID: fmt.Sprintf("lease-%d-%d", task, racer), Delegate: fmt.Sprintf("delegate-%d", racer), Attempt: 1}
	}
	for i := range tasks {
		mustCreate(t, s, newTask(fmt.Sprintf("claim-race-%d", i), base))
	}
	// All tasks at once, so that claims of different tasks share
	// transactions in stores that batch.
	errs := race(tasks*racers, func(i int) error {
		return s.Claim(ctx, fmt.Sprintf("claim-race-%d", i/racers), lease(i/racers, i%racers))
	})
	for i := range tasks {
		id := fmt.Sprintf("claim-race-%d", i)
		w := oneWinner(t, fmt.Sprintf("Claim(%q)", id), errs[i*racers:(i+1)*racers], store.ErrConflict)
		if w < 0 {
			continue
		}
		got, l := mustGet(t, s, id), lease(i, w)
		if got.State != store.StateLeased || got.LeaseID != l.ID || got.Delegate != l.Delegate {
			t.Errorf("GetTask(%q) = %s under %q by %q, want leased under the winner's %q by %q",
				id, got.State, got.LeaseID, got.Delegate, l.ID, l.Delegate)
		}
	}
}

func testConcurrentComplete(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	const tasks = 5
	for i := range tasks {
		put(t, s, newTask(fmt.Sprintf("complete-race-%d", i), base), store.StateLeased)
	}
	// Half the racers hold the lease (a result), half none (a timeout):
	// both may complete a leased task, only one may win.
	final := func(racer int) store.Final {
		return store.Final{State: store.StateSucceeded, Code: fmt.Sprintf("CODE_%d", racer)}
	}
	errs := race(tasks*racers, func(i int) error {
		id := fmt.Sprintf("complete-race-%d", i/racers)
		lease := ""
		if i%2 == 0 {
			lease = currentLease(id)
		}
		return s.Complete(ctx, id, lease, final(i%racers))
	})
	for i := range tasks {
		id := fmt.Sprintf("complete-race-%d", i)
		w := oneWinner(t, fmt.Sprintf("Complete(%q)", id), errs[i*racers:(i+1)*racers], store.ErrConflict)
		if w < 0 {
			continue
		}
		if got := mustGet(t, s, id); got.Code != final(w).Code {
			t.Errorf("GetTask(%q).Code = %q, want the winner's %q", id, got.Code, final(w).Code)
		}
	}
}

// testConcurrentRequeueComplete races a lease expiry against the result
// under that lease: exactly one of them may take effect.
func testConcurrentRequeueComplete(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	const tasks = 10
	for i := range tasks {
		put(t, s, newTask(fmt.Sprintf("fence-%d", i), base), store.StateLeased)
	}
	errs := race(2*tasks, func(i int) error {
		id := fmt.Sprintf("fence-%d", i/2)
		if i%2 == 0 {
			return s.Requeue(ctx, id, currentLease(id))
		}
		return s.Complete(ctx, id, currentLease(id), store.Final{State: store.StateSucceeded, Code: "OK"})
	})
	for i := range tasks {
		id := fmt.Sprintf("fence-%d", i)
		w := oneWinner(t, fmt.Sprintf("Requeue/Complete(%q)", id), errs[2*i:2*i+2], store.ErrConflict)
		wantState := store.StateQueued
		if w == 1 {
			wantState = store.StateSucceeded
		}
		if got := mustGet(t, s, id); w >= 0 && got.State != wantState {
			t.Errorf("GetTask(%q).State = %s, want %s", id, got.State, wantState)
		}
	}
}
