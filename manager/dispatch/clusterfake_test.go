package dispatch

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
)

// fakeQueue is an in-memory shared queue of a cluster (store.Cluster's
// task side, as the PostgreSQL store behaves), for the dispatcher's unit
// tests; replica views are fakeReplica. fail, when set, makes a call
// fail (failure injection); calls counts them. (Tests that fail a store
// for every backend wrap it instead: failingPull.)
type fakeQueue struct {
	mu    sync.Mutex // guards everything below
	tasks map[string]*store.Task
	subs  []chan store.Event
	fail  func(op string) error
	calls map[string]int
	lease time.Duration
}

func newFakeQueue(lease time.Duration) *fakeQueue {
	return &fakeQueue{tasks: map[string]*store.Task{}, calls: map[string]int{}, lease: lease}
}

// fakeReplica is one replica's store: the shared queue, fenced by its
// id, and a bolt file for the catalog.
type fakeReplica struct {
	store.Store
	q  *fakeQueue
	id string
}

var _ store.Cluster = (*fakeReplica)(nil)

func (q *fakeQueue) replica(t *testing.T, id string) *fakeReplica {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &fakeReplica{Store: db, q: q, id: id}
}

// enter counts op and returns the injected failure, with q.mu held on
// success.
func (q *fakeQueue) enter(op string) error {
	q.mu.Lock()
	q.calls[op]++
	if q.fail != nil {
		if err := q.fail(op); err != nil {
			q.mu.Unlock()
			return err
		}
	}
	return nil
}

// notifyLocked sends e to every listener, after the change (as NOTIFY
// after commit: asynchronously).
func (q *fakeQueue) notifyLocked(e store.Event) {
	for _, ch := range q.subs {
		select {
		case ch <- e:
		default: // a listener that fell behind: as a lost connection
			select {
			case ch <- store.Event{Kind: store.EventResync}:
			default:
			}
		}
	}
}

// subscribe delivers the events to fn from a goroutine of its own until
// the test ends.
func (q *fakeQueue) subscribe(t *testing.T, fn func(store.Event)) {
	ch := make(chan store.Event, 4096)
	q.mu.Lock()
	q.subs = append(q.subs, ch)
	q.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case e := <-ch:
				fn(e)
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(done); wg.Wait() })
}

func clone(t *store.Task) *store.Task {
	c := *t
	c.Selectors = slices.Clone(t.Selectors)
	c.Payload = slices.Clone(t.Payload)
	c.Outcome = slices.Clone(t.Outcome)
	return &c
}

func (q *fakeQueue) headLocked(t *store.Task) bool {
	if t.OrderKey == "" {
		return true
	}
	for _, e := range q.tasks {
		if e.OrderKey == t.OrderKey && !e.State.Final() && e.ID != t.ID &&
			(e.CreatedAt.Before(t.CreatedAt) || (e.CreatedAt.Equal(t.CreatedAt) && e.ID < t.ID)) {
			return false
		}
	}
	return true
}

// sortedLocked is every task, oldest first.
func (q *fakeQueue) sortedLocked() []*store.Task {
	ts := make([]*store.Task, 0, len(q.tasks))
	for _, t := range q.tasks {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *store.Task) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return ts
}

func (r *fakeReplica) CreateTask(ctx context.Context, t *store.Task) error {
	q := r.q
	if err := q.enter("create"); err != nil {
		return err
	}
	defer q.mu.Unlock()
	if q.tasks[t.ID] != nil {
		return store.ErrExists
	}
	if t.Request.ID != "" {
		for _, e := range q.tasks {
			if e.Request.Owner == t.Request.Owner && e.Request.ID == t.Request.ID {
				return &store.DuplicateRequestError{Task: clone(e)}
			}
		}
	}
	c := clone(t)
	c.State = store.StateQueued
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	q.tasks[t.ID] = c
	if c.Owner == "" {
		q.notifyLocked(store.Event{Kind: store.EventQueued})
	}
	return nil
}

func (r *fakeReplica) GetTask(ctx context.Context, id string) (*store.Task, error) {
	q := r.q
	if err := q.enter("get"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	t := q.tasks[id]
	if t == nil {
		return nil, store.ErrNotFound
	}
	return clone(t), nil
}

func (r *fakeReplica) ListTasks(ctx context.Context, f store.Filter) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("list"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	for _, t := range q.sortedLocked() {
		out = append(out, clone(t))
	}
	slices.Reverse(out)
	return out, nil
}

func (r *fakeReplica) ListUnfinished(ctx context.Context) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("unfinished"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	for _, t := range q.sortedLocked() {
		if !t.State.Final() {
			out = append(out, clone(t))
		}
	}
	return out, nil
}

func (r *fakeReplica) Claim(ctx context.Context, id string, l store.Lease) error {
	q := r.q
	if err := q.enter("claim"); err != nil {
		return err
	}
	defer q.mu.Unlock()
	t := q.tasks[id]
	switch {
	case t == nil:
		return store.ErrNotFound
	case t.State != store.StateQueued || t.Owner != r.id:
		return fmt.Errorf("claim %s: %w", id, store.ErrConflict)
	}
	t.State, t.LeaseID, t.Delegate, t.Attempt = store.StateLeased, l.ID, l.Delegate, l.Attempt
	t.UpdatedAt, t.LeaseExpiry = time.Now(), time.Now().Add(q.lease)
	return nil
}

func (r *fakeReplica) Requeue(ctx context.Context, id, leaseID string) error {
	q := r.q
	if err := q.enter("requeue"); err != nil {
		return err
	}
	defer q.mu.Unlock()
	t := q.tasks[id]
	switch {
	case t == nil:
		return store.ErrNotFound
	case t.State != store.StateLeased || t.LeaseID != leaseID || t.Owner != r.id:
		return fmt.Errorf("requeue %s: %w", id, store.ErrConflict)
	}
	t.State, t.LeaseID, t.Delegate, t.LeaseExpiry, t.UpdatedAt = store.StateQueued, "", "", time.Time{}, time.Now()
	return nil
}

func (r *fakeReplica) Complete(ctx context.Context, id, leaseID string, f store.Final) error {
	q := r.q
	if err := q.enter("complete"); err != nil {
		return err
	}
	defer q.mu.Unlock()
	t := q.tasks[id]
	switch {
	case t == nil:
		return store.ErrNotFound
	case t.State.Final() || (leaseID != "" && (t.State != store.StateLeased || t.LeaseID != leaseID)):
		return fmt.Errorf("complete %s: %w", id, store.ErrConflict)
	}
	q.finalLocked(t, f)
	return nil
}

// finalLocked makes t final, sends EventFinal and hands its order chain
// over to the next task.
func (q *fakeQueue) finalLocked(t *store.Task, f store.Final) {
	head := q.headLocked(t)
	t.State, t.Code, t.Outcome, t.Payload, t.UpdatedAt = f.State, f.Code, slices.Clone(f.Outcome), slices.Clone(f.Payload), time.Now()
	q.notifyLocked(store.Event{Kind: store.EventFinal, TaskID: t.ID})
	if !head || t.OrderKey == "" {
		return
	}
	for _, n := range q.sortedLocked() {
		if n.OrderKey == t.OrderKey && !n.State.Final() {
			if n.Owner == "" && n.State == store.StateQueued {
				q.notifyLocked(store.Event{Kind: store.EventQueued})
			}
			return
		}
	}
}

func (r *fakeReplica) Beat(ctx context.Context, rep store.Replica) error { return nil }
func (r *fakeReplica) Replicas(ctx context.Context) ([]store.Replica, error) {
	return nil, nil
}
func (r *fakeReplica) Leave(ctx context.Context, id string) error { return nil }

func (r *fakeReplica) Pull(ctx context.Context, replica string, wants []store.PullWant) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("pull"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	for _, w := range wants {
		n := 0
		for _, t := range q.sortedLocked() {
			if n >= w.N {
				break
			}
			if t.State != store.StateQueued || t.Owner != "" || !newTagSet(w.Tags).hasAll(t.Selectors) ||
				!scopes.Serves(w.Scope, t.Scope) || !q.headLocked(t) || (w.SelectedOnly && len(t.Selectors) == 0) {
				continue
			}
			t.Owner = replica
			out = append(out, clone(t))
			n++
		}
	}
	return out, nil
}

func (r *fakeReplica) Disown(ctx context.Context, replica string, keep []string) (int, error) {
	q := r.q
	if err := q.enter("disown"); err != nil {
		return 0, err
	}
	defer q.mu.Unlock()
	n := 0
	for _, t := range q.tasks {
		if t.Owner == replica && t.State == store.StateQueued && !slices.Contains(keep, t.ID) {
			t.Owner = ""
			n++
		}
	}
	if n > 0 {
		q.notifyLocked(store.Event{Kind: store.EventQueued})
	}
	return n, nil
}

func (r *fakeReplica) Adopt(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("adopt"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	for _, l := range leases {
		if t := q.tasks[l.TaskID]; t != nil && t.State == store.StateLeased && t.LeaseID == l.LeaseID {
			t.Owner, t.LeaseExpiry = replica, time.Now().Add(d)
			out = append(out, clone(t))
		}
	}
	return out, nil
}

func (r *fakeReplica) RenewLeases(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]store.LeaseRef, error) {
	q := r.q
	if err := q.enter("renew"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var missed []store.LeaseRef
	for _, l := range leases {
		if t := q.tasks[l.TaskID]; t != nil && t.State == store.StateLeased && t.LeaseID == l.LeaseID && t.Owner == replica {
			t.LeaseExpiry = time.Now().Add(d)
			continue
		}
		missed = append(missed, l)
	}
	return missed, nil
}

func (r *fakeReplica) ExpireLeases(ctx context.Context, margin, orderMargin time.Duration) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("expire leases"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	now := time.Now()
	for _, t := range q.sortedLocked() {
		m := margin
		if t.OrderKey != "" {
			m += orderMargin
		}
		if t.State != store.StateLeased || !now.After(t.LeaseExpiry.Add(m)) {
			continue
		}
		if t.Attempt >= t.MaxAttempts {
			q.finalLocked(t, store.Final{State: store.StateFailed, Code: "DELEGATE_LOST"})
		} else {
			t.State, t.LeaseID, t.Delegate, t.Owner, t.LeaseExpiry = store.StateQueued, "", "", "", time.Time{}
			q.notifyLocked(store.Event{Kind: store.EventQueued})
		}
		out = append(out, clone(t))
	}
	return out, nil
}

func (r *fakeReplica) ExpireQueued(ctx context.Context) ([]*store.Task, error) {
	q := r.q
	if err := q.enter("expire queued"); err != nil {
		return nil, err
	}
	defer q.mu.Unlock()
	var out []*store.Task
	now := time.Now()
	for _, t := range q.sortedLocked() {
		if t.State != store.StateQueued || t.Owner != "" || !q.headLocked(t) {
			continue
		}
		switch {
		case now.After(t.Deadline):
			q.finalLocked(t, store.Final{State: store.StateFailed, Code: "TIMEOUT"})
		case now.After(t.QueueDeadline):
			q.finalLocked(t, store.Final{State: store.StateFailed, Code: "NO_ELIGIBLE_DELEGATE"})
		default:
			continue
		}
		out = append(out, clone(t))
	}
	return out, nil
}

func (r *fakeReplica) ConnectDelegate(ctx context.Context, d store.DelegateRecord, dead []string) (*store.DelegateRecord, error) {
	return nil, nil
}
func (r *fakeReplica) UpdateDelegates(ctx context.Context, replica string, ds []store.DelegateRecord) error {
	return nil
}
func (r *fakeReplica) DisconnectDelegate(ctx context.Context, replica, name string) error {
	return nil
}
func (r *fakeReplica) Delegates(ctx context.Context) ([]store.DelegateRecord, error) {
	return nil, nil
}
func (r *fakeReplica) DropReplica(ctx context.Context, replica string) error {
	q := r.q
	if err := q.enter("drop"); err != nil {
		return err
	}
	defer q.mu.Unlock()
	for _, t := range q.tasks {
		if t.Owner == replica && t.State == store.StateQueued {
			t.Owner = ""
		}
	}
	q.notifyLocked(store.Event{Kind: store.EventQueued})
	return nil
}
func (r *fakeReplica) Notify(ctx context.Context, e store.Event) error {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	r.q.notifyLocked(e)
	return nil
}
func (r *fakeReplica) Listen(ctx context.Context, fn func(store.Event)) error {
	<-ctx.Done()
	return nil
}
