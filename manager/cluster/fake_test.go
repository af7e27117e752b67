package cluster_test

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// fakeCluster is a store.Cluster in memory: replica rows whose Age the
// test sets, failure injection, and call counts. Methods the membership
// does not call return nil.
type fakeCluster struct {
	mu sync.Mutex // guards every field
	// rows by ID; Beat sets the beating row's Age to 0 (inserting it,
	// with a new StartedAt, when missing).
	rows map[string]*store.Replica
	// fail, when set, is every call's error (an outage).
	fail error
	// beats, failedBeats, reads count calls; drops lists DropReplica's
	// arguments in order.
	beats, failedBeats, reads int
	drops                     []string
	delegates                 []store.DelegateRecord
	// listenErrs are returned by the first Listen calls, one each; then
	// Listen delivers events until its ctx is done.
	listenErrs []error
	events     chan store.Event
	listens    int
	// changed is signalled (non-blocking) after every call.
	changed chan struct{}
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{rows: map[string]*store.Replica{}, events: make(chan store.Event, 16), changed: make(chan struct{}, 1)}
}

var _ store.Cluster = (*fakeCluster)(nil)

var errOutage = store.Unavailable(errors.New("fake: connection refused"))

// done unlocks and signals a change.
func (f *fakeCluster) done() {
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeCluster) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.done()
}

// put sets a row (another replica's, with its Age).
func (f *fakeCluster) put(r store.Replica) {
	f.mu.Lock()
	f.rows[r.ID] = &r
	f.done()
}

// snapshot returns a copy of the counts.
func (f *fakeCluster) snapshot() (beats, failedBeats, reads int, drops []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.beats, f.failedBeats, f.reads, append([]string(nil), f.drops...)
}

func (f *fakeCluster) Beat(ctx context.Context, r store.Replica) error {
	f.mu.Lock()
	defer f.done()
	if f.fail != nil {
		f.failedBeats++
		return f.fail
	}
	f.beats++
	if row, ok := f.rows[r.ID]; ok {
		row.Age = 0
		row.Advertise = r.Advertise
		return nil
	}
	r.StartedAt = time.Now().UTC()
	r.Age = 0
	f.rows[r.ID] = &r
	return nil
}

func (f *fakeCluster) Replicas(ctx context.Context) ([]store.Replica, error) {
	f.mu.Lock()
	defer f.done()
	if f.fail != nil {
		return nil, f.fail
	}
	f.reads++
	var out []store.Replica
	for _, r := range f.rows {
		out = append(out, *r)
	}
	return out, nil
}

func (f *fakeCluster) Leave(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.done()
	if f.fail != nil {
		return f.fail
	}
	delete(f.rows, id)
	return nil
}

func (f *fakeCluster) DropReplica(ctx context.Context, replica string) error {
	f.mu.Lock()
	defer f.done()
	if f.fail != nil {
		return f.fail
	}
	f.drops = append(f.drops, replica)
	delete(f.rows, replica)
	return nil
}

func (f *fakeCluster) Delegates(ctx context.Context) ([]store.DelegateRecord, error) {
	f.mu.Lock()
	defer f.done()
	if f.fail != nil {
		return nil, f.fail
	}
	return append([]store.DelegateRecord(nil), f.delegates...), nil
}

func (f *fakeCluster) Listen(ctx context.Context, fn func(store.Event)) error {
	f.mu.Lock()
	f.listens++
	var err error
	if len(f.listenErrs) > 0 {
		err, f.listenErrs = f.listenErrs[0], f.listenErrs[1:]
	}
	f.done()
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-f.events:
			fn(e)
		}
	}
}

func (f *fakeCluster) Notify(ctx context.Context, e store.Event) error { return nil }

func (f *fakeCluster) Pull(ctx context.Context, replica string, wants []store.PullWant) ([]*store.Task, error) {
	return nil, nil
}

func (f *fakeCluster) Disown(ctx context.Context, replica string, keep []string) (int, error) {
	return 0, nil
}

func (f *fakeCluster) Adopt(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]*store.Task, error) {
	return nil, nil
}

func (f *fakeCluster) RenewLeases(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]store.LeaseRef, error) {
	return nil, nil
}

func (f *fakeCluster) ExpireLeases(ctx context.Context, margin, orderMargin time.Duration) ([]*store.Task, error) {
	return nil, nil
}

func (f *fakeCluster) ExpireQueued(ctx context.Context) ([]*store.Task, error) { return nil, nil }

func (f *fakeCluster) ConnectDelegate(ctx context.Context, d store.DelegateRecord, dead []string) (*store.DelegateRecord, error) {
	return nil, nil
}

func (f *fakeCluster) UpdateDelegates(ctx context.Context, replica string, ds []store.DelegateRecord) error {
	return nil
}

func (f *fakeCluster) DisconnectDelegate(ctx context.Context, replica, name string) error {
	return nil
}
