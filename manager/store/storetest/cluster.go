package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The cluster conformance suite tests the store.Cluster contract
// (manager/store/cluster.go) and how a replica's store changes the task
// methods: several stores, one per replica, on one shared database.

// ClusterStore is a store with its cluster side, as a replica opens it.
type ClusterStore interface {
	store.Store
	store.Cluster
}

// ClusterLease is the lease a ClusterOpenFunc's replica stores must
// claim with (postgres.Options.LeaseDuration).
const ClusterLease = time.Minute

// ClusterOpenFunc makes a new, empty shared store for t and returns the
// function that opens it for a replica: every store that function
// returns sees the same data. A store opened for replica "" is a single
// manager's; any other is replica's, with a lease of ClusterLease. The
// suite closes every store it opens.
type ClusterOpenFunc func(t *testing.T) func(replica string) ClusterStore

// RunClusterConformance runs the cluster suite against the stores open
// returns. Its sub-tests run in parallel, each on a shared store of its
// own.
func RunClusterConformance(t *testing.T, open ClusterOpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(string) ClusterStore)
	}{
		{"CreateOwner", testClusterCreateOwner},
		{"ClaimFenced", testClusterClaimFenced},
		{"RequeueFenced", testClusterRequeueFenced},
		{"CompleteAnyReplica", testClusterCompleteAnyReplica},
		{"ChainHead", testClusterChainHead},
		{"SingleManager", testClusterSingleManager},
		{"Pull", testClusterPull},
		{"PullRace", testClusterPullRace},
		{"PullSelectedOnly", testClusterPullSelectedOnly},
		{"Disown", testClusterDisown},
		{"Adopt", testClusterAdopt},
		{"RenewLeases", testClusterRenewLeases},
		{"ExpireLeases", testClusterExpireLeases},
		{"ExpireQueued", testClusterExpireQueued},
		{"ConnectDelegate", testClusterConnectDelegate},
		{"ConnectRace", testClusterConnectRace},
		{"UpdateDelegates", testClusterUpdateDelegates},
		{"DropReplica", testClusterDropReplica},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			shared := open(t)
			tt.fn(t, func(replica string) ClusterStore {
				t.Helper()
				s := shared(replica)
				if s == nil {
					t.Fatalf("open(%q) returned a nil store", replica)
				}
				t.Cleanup(func() {
					if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
						t.Errorf("Close() = %v", err)
					}
				})
				return s
			})
		})
	}
}

// clusterTask is an async task created ago before now, owned by owner,
// with a 60 s deadline and a 30 s queue deadline from its creation.
func clusterTask(id, owner string, ago time.Duration) *store.Task {
	created := time.Now().Add(-ago).Truncate(time.Millisecond)
	return &store.Task{
		ID:            id,
		Kind:          "secret.update",
		Selectors:     []string{"prod"},
		Payload:       []byte("payload of " + id),
		MaxAttempts:   2,
		CreatedAt:     created,
		Deadline:      created.Add(60 * time.Second),
		QueueDeadline: created.Add(30 * time.Second),
		Owner:         owner,
	}
}

// ordered is t with order key key.
func ordered(t *store.Task, key string) *store.Task {
	t.OrderKey = key
	return t
}

// events collects what a Listen on one store hears.
type events struct {
	s  ClusterStore
	ch chan store.Event
	n  int // markers sent
}

// listen starts a Listen on s for the rest of t, and returns once it
// hears notifications (LISTEN takes effect asynchronously).
func listen(t *testing.T, s ClusterStore) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{s: s, ch: make(chan store.Event, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Listen(ctx, func(e store.Event) { ev.ch <- e })
	}()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("Listen heard no notification in 10s")
		}
		ev.n++
		name := fmt.Sprintf("ready-%d", ev.n)
		if err := s.Notify(t.Context(), store.Event{Kind: store.EventDelegate, Name: name}); err != nil {
			t.Fatalf("Notify = %v", err)
		}
		select {
		case e := <-ev.ch:
			if e.Kind == store.EventDelegate && e.Name == name {
				ev.drain(t)
				return ev
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drain returns the events committed before it was called: it sends a
// marker and collects until the marker arrives (notifications arrive in
// commit order). Markers of earlier calls are left out.
func (ev *events) drain(t *testing.T) []store.Event {
	t.Helper()
	ev.n++
	marker := fmt.Sprintf("marker-%d", ev.n)
	if err := ev.s.Notify(t.Context(), store.Event{Kind: store.EventDelegate, Name: marker}); err != nil {
		t.Fatalf("Notify = %v", err)
	}
	var out []store.Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-ev.ch:
			if e.Kind == store.EventDelegate && e.Name == marker {
				return out
			}
			if e.Kind == store.EventDelegate && (len(e.Name) > 6 && e.Name[:6] == "ready-" || len(e.Name) > 7 && e.Name[:7] == "marker-") {
				continue
			}
			out = append(out, e)
		case <-timeout:
			t.Fatalf("marker %s not heard in 10s; heard %v", marker, out)
		}
	}
}

// expectEvents fails t unless the events committed so far are want, in
// any order (an event sent twice in one transaction arrives once).
func (ev *events) expect(t *testing.T, what string, want ...store.Event) {
	t.Helper()
	got := ev.drain(t)
	left := append([]store.Event(nil), got...)
	for _, w := range want {
		found := false
		for i, g := range left {
			if g == w {
				left = append(left[:i], left[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: events %v, want %v among them", what, got, w)
		}
	}
	for _, g := range left {
		// A queued event may arrive once per transaction that sent
		// one; an extra one is harmless (a pull finds nothing).
		if g.Kind != store.EventQueued || !containsKind(want, store.EventQueued) {
			t.Errorf("%s: unexpected event %+v (all: %v, want %v)", what, g, got, want)
		}
	}
}

func containsKind(es []store.Event, k store.EventKind) bool {
	for _, e := range es {
		if e.Kind == k {
			return true
		}
	}
	return false
}

// checkNear fails t unless got lies within clockSkew of want.
func checkNear(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if d := got.Sub(want); d < -clockSkew || d > clockSkew {
		t.Errorf("%s = %v, want about %v", what, got, want)
	}
}

// mustCreateAll creates tasks in order.
func mustCreateAll(t *testing.T, s store.Store, tasks ...*store.Task) {
	t.Helper()
	for _, task := range tasks {
		mustCreate(t, s, task)
	}
}

// parallel runs fn(i) for i in [0, n) at once and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}
