package manager_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
)

// errOutage is a transient store failure, as PostgreSQL's adapter reports
// a lost connection.
var errOutage = store.Unavailable(errors.New("fault: connection refused"))

// hook decides one store call: real runs the method on the real store
// and returns its error; the hook returns what the method returns. It
// may skip real (a failure that changed nothing), run it and fail anyway
// (commit-then-error), or wait first (a slow call).
type hook func(ctx context.Context, id string, real func() error) error

// faults holds a hook per Store method a test may break; nil runs the
// real method. The catalog methods the dispatcher reads while preparing
// a task (GetConnector, GetCredential) are here too.
type faults struct {
	CreateTask, GetTask, ListTasks, ListUnfinished hook
	Claim, Requeue, Complete                       hook
	GetConnector, GetCredential                    hook
}

// faultStore is a store.Store over a real one (bolt in a temp dir) that
// injects the failures its hooks describe and counts the calls.
type faultStore struct {
	store.Store
	mu    sync.Mutex // guards f and calls
	f     faults
	calls map[string]int
}

var _ store.Store = (*faultStore)(nil)

// mustFaultStore opens bolt in a temp dir behind a faultStore with no
// faults.
func mustFaultStore(t testing.TB) *faultStore {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	return &faultStore{Store: db, calls: map[string]int{}}
}

// set changes the hooks.
func (s *faultStore) set(change func(f *faults)) {
	s.mu.Lock()
	change(&s.f)
	s.mu.Unlock()
}

// count returns how many times method was called.
func (s *faultStore) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// run counts a call of method and runs it through its hook.
func (s *faultStore) run(ctx context.Context, method, id string, pick func(f *faults) hook, real func() error) error {
	s.mu.Lock()
	s.calls[method]++
	h := pick(&s.f)
	s.mu.Unlock()
	if h == nil {
		return real()
	}
	return h(ctx, id, real)
}

// fail is a hook failing every call with err, changing nothing.
func fail(err error) hook {
	return func(context.Context, string, func() error) error { return err }
}

// failFirst fails the first n calls with err and runs the rest.
func failFirst(n int, err error) hook {
	var mu sync.Mutex
	return func(_ context.Context, _ string, real func() error) error {
		mu.Lock()
		n--
		left := n
		mu.Unlock()
		if left >= 0 {
			return err
		}
		return real()
	}
}

// commitThenFail runs the call and returns err although it took effect
// (a PostgreSQL call timeout after the commit).
func commitThenFail(err error) hook {
	return func(_ context.Context, _ string, real func() error) error {
		if rerr := real(); rerr != nil {
			return rerr
		}
		return err
	}
}

// slow runs the call after d.
func slow(d time.Duration) hook {
	return func(ctx context.Context, _ string, real func() error) error {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
		return real()
	}
}

func (s *faultStore) CreateTask(ctx context.Context, t *store.Task) error {
	return s.run(ctx, "CreateTask", t.ID, func(f *faults) hook { return f.CreateTask },
		func() error { return s.Store.CreateTask(ctx, t) })
}

func (s *faultStore) GetTask(ctx context.Context, id string) (t *store.Task, err error) {
	err = s.run(ctx, "GetTask", id, func(f *faults) hook { return f.GetTask },
		func() error { t, err = s.Store.GetTask(ctx, id); return err })
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (s *faultStore) ListTasks(ctx context.Context, fl store.Filter) (ts []*store.Task, err error) {
	err = s.run(ctx, "ListTasks", "", func(f *faults) hook { return f.ListTasks },
		func() error { ts, err = s.Store.ListTasks(ctx, fl); return err })
	return ts, err
}

func (s *faultStore) ListUnfinished(ctx context.Context) (ts []*store.Task, err error) {
	err = s.run(ctx, "ListUnfinished", "", func(f *faults) hook { return f.ListUnfinished },
		func() error { ts, err = s.Store.ListUnfinished(ctx); return err })
	return ts, err
}

func (s *faultStore) Claim(ctx context.Context, id string, l store.Lease) error {
	return s.run(ctx, "Claim", id, func(f *faults) hook { return f.Claim },
		func() error { return s.Store.Claim(ctx, id, l) })
}

func (s *faultStore) Requeue(ctx context.Context, id, leaseID string) error {
	return s.run(ctx, "Requeue", id, func(f *faults) hook { return f.Requeue },
		func() error { return s.Store.Requeue(ctx, id, leaseID) })
}

func (s *faultStore) Complete(ctx context.Context, id, leaseID string, fin store.Final) error {
	return s.run(ctx, "Complete", id, func(f *faults) hook { return f.Complete },
		func() error { return s.Store.Complete(ctx, id, leaseID, fin) })
}

func (s *faultStore) GetConnector(ctx context.Context, sc store.Scope, id string) (c *store.Connector, err error) {
	err = s.run(ctx, "GetConnector", id, func(f *faults) hook { return f.GetConnector },
		func() error { c, err = s.Store.GetConnector(ctx, sc, id); return err })
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *faultStore) GetCredential(ctx context.Context, sc store.Scope, name string) (c *store.Credential, err error) {
	err = s.run(ctx, "GetCredential", name, func(f *faults) hook { return f.GetCredential },
		func() error { c, err = s.Store.GetCredential(ctx, sc, name); return err })
	if err != nil {
		return nil, err
	}
	return c, nil
}
