package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Pull takes unowned queued order-chain heads whose selectors are among
// the want's tags and whose scope the want's scope serves, oldest first,
// up to N, and makes them the replica's.
func testClusterPull(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	acme := store.Scope{Account: "acme"}
	scoped := func(task *store.Task, s store.Scope, sel ...string) *store.Task {
		task.Scope, task.Selectors = s, sel
		return task
	}
	mustCreateAll(t, r1,
		scoped(clusterTask("plain", "", 90*time.Second), store.Scope{}, "prod"),
		scoped(clusterTask("needs-eu", "", 85*time.Second), store.Scope{}, "eu", "prod"),
		scoped(clusterTask("acme-project", "", 80*time.Second), store.Scope{Account: "acme", Org: "pay", Project: "web"}),
		scoped(clusterTask("other-account", "", 75*time.Second), store.Scope{Account: "globex"}),
		ordered(scoped(clusterTask("head", "", 70*time.Second), acme, "prod"), "k"),
		ordered(scoped(clusterTask("behind", "", 65*time.Second), acme, "prod"), "k"),
		scoped(clusterTask("owned", "r2", 60*time.Second), store.Scope{}, "prod"),
		scoped(clusterTask("newest", "", 55*time.Second), store.Scope{}, "prod"),
	)
	want := store.PullWant{Tags: []string{"prod", "x"}, Scope: acme, N: 3}
	got, err := r1.Pull(t.Context(), "r1", []store.PullWant{want})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if g, w := ids(got), []string{"plain", "acme-project", "head"}; !slices.Equal(g, w) {
		t.Errorf("Pull(N=3) = %v, want %v (oldest first, eligible only)", g, w)
	}
	for _, task := range got {
		if task.Owner != "r1" || mustGet(t, r2, task.ID).Owner != "r1" {
			t.Errorf("pulled task %s: Owner %q (stored %q), want r1", task.ID, task.Owner, mustGet(t, r2, task.ID).Owner)
		}
	}
	// Several wants in one call (an unscoped delegate serves every
	// scope); the tasks pulled already are not pulled again, nor the
	// one behind its chain's head, nor another's.
	got, err = r2.Pull(t.Context(), "r2", []store.PullWant{want, {Tags: []string{"eu", "prod"}, N: 10}, {N: 0}})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if g, w := ids(got), []string{"needs-eu", "other-account", "newest"}; !slices.Equal(g, w) {
		t.Errorf("second Pull = %v, want %v", g, w)
	}
	if got := mustGet(t, r1, "behind"); got.Owner != "" {
		t.Errorf("the task behind its chain's head was pulled by %q", got.Owner)
	}
	if got := mustGet(t, r1, "owned"); got.Owner != "r2" {
		t.Errorf("another replica's task: owner %q, want r2", got.Owner)
	}
	got, err = r1.Pull(t.Context(), "r1", []store.PullWant{{Tags: []string{"prod", "eu"}, N: 10}})
	if err != nil || len(got) != 0 {
		t.Errorf("Pull with nothing left = %v, %v, want nothing", ids(got), err)
	}
}

// A want with SelectedOnly (the platform delegate's) takes only tasks
// with selectors, never one that selects nothing.
func testClusterPullSelectedOnly(t *testing.T, open func(string) ClusterStore) {
	r1 := open("r1")
	none, selected := clusterTask("none", "", 20*time.Second), clusterTask("selected", "", 10*time.Second)
	none.Selectors, selected.Selectors = nil, []string{"smd:platform"}
	mustCreateAll(t, r1, none, selected)
	got, err := r1.Pull(t.Context(), "r1", []store.PullWant{{Tags: []string{"smd:platform"}, N: 10, SelectedOnly: true}})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if g := ids(got); !slices.Equal(g, []string{"selected"}) {
		t.Errorf("Pull(SelectedOnly) = %v, want [selected]", g)
	}
	if got := mustGet(t, r1, "none"); got.Owner != "" {
		t.Errorf("a task without selectors was pulled by %q", got.Owner)
	}
}

// Replicas pulling at once take each task exactly once.
func testClusterPullRace(t *testing.T, open func(string) ClusterStore) {
	const pullers, tasks = 8, 200
	stores := make([]ClusterStore, pullers)
	for i := range stores {
		stores[i] = open(fmt.Sprintf("r%d", i))
	}
	for i := range tasks {
		mustCreate(t, stores[0], clusterTask(fmt.Sprintf("t%03d", i), "", time.Duration(tasks-i)*time.Millisecond))
	}
	var (
		mu     sync.Mutex
		pulled = map[string][]string{} // task → replicas that got it
	)
	errs := make([]error, pullers)
	parallel(pullers, func(i int) {
		r := fmt.Sprintf("r%d", i)
		for {
			got, err := stores[i].Pull(t.Context(), r, []store.PullWant{{Tags: []string{"prod"}, N: 7}})
			if err != nil {
				errs[i] = err
				return
			}
			if len(got) == 0 {
				return
			}
			mu.Lock()
			for _, task := range got {
				pulled[task.ID] = append(pulled[task.ID], r)
			}
			mu.Unlock()
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("puller %d: %v", i, err)
		}
	}
	if len(pulled) != tasks {
		t.Errorf("%d tasks pulled, want %d", len(pulled), tasks)
	}
	for id, rs := range pulled {
		if len(rs) != 1 {
			t.Errorf("task %s pulled by %v, want exactly one replica", id, rs)
			continue
		}
		if got := mustGet(t, stores[0], id); got.Owner != rs[0] {
			t.Errorf("task %s owned by %q, but pulled by %s", id, got.Owner, rs[0])
		}
	}
}

// Disown gives back a replica's queued tasks but those kept; leased ones
// and other replicas' stay.
func testClusterDisown(t *testing.T, open func(string) ClusterStore) {
	r1 := open("r1")
	ev := listen(t, r1)
	mustCreateAll(t, r1, clusterTask("q1", "r1", 0), clusterTask("q2", "r1", 0), clusterTask("q3", "r1", 0),
		clusterTask("leased", "r1", 0), clusterTask("theirs", "r2", 0))
	mustClaim(t, r1, "leased", store.Lease{ID: "l", Delegate: "d", Attempt: 1})
	ev.drain(t)
	n, err := r1.Disown(t.Context(), "r1", []string{"q2"})
	if err != nil || n != 2 {
		t.Fatalf("Disown = %d, %v, want 2, nil", n, err)
	}
	for id, owner := range map[string]string{"q1": "", "q2": "r1", "q3": "", "leased": "r1", "theirs": "r2"} {
		if got := mustGet(t, r1, id); got.Owner != owner {
			t.Errorf("after Disown: %s owned by %q, want %q", id, got.Owner, owner)
		}
	}
	ev.expect(t, "disown", store.Event{Kind: store.EventQueued})
	if n, err := r1.Disown(t.Context(), "r1", []string{"q2"}); err != nil || n != 0 {
		t.Errorf("second Disown = %d, %v, want 0, nil", n, err)
	}
	ev.expect(t, "disown of nothing")
}

// Adopt makes a replica the owner of tasks leased under the listed
// leases, and renews them.
func testClusterAdopt(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	mustCreateAll(t, r1, clusterTask("a", "r1", 2*time.Second), clusterTask("b", "r1", time.Second), clusterTask("queued", "r1", 0))
	mustClaim(t, r1, "a", store.Lease{ID: "la", Delegate: "d", Attempt: 1})
	mustClaim(t, r1, "b", store.Lease{ID: "lb", Delegate: "d", Attempt: 1})
	bBefore, qBefore := mustGet(t, r1, "b"), mustGet(t, r1, "queued")
	start := time.Now()
	got, err := r2.Adopt(t.Context(), "r2", []store.LeaseRef{
		{TaskID: "a", LeaseID: "la"}, {TaskID: "b", LeaseID: "stale"}, {TaskID: "queued", LeaseID: ""}, {TaskID: "unknown", LeaseID: "x"},
	}, 5*time.Minute)
	if err != nil {
		t.Fatalf("Adopt = %v", err)
	}
	if g := ids(got); !slices.Equal(g, []string{"a"}) {
		t.Fatalf("Adopt = %v, want [a]", g)
	}
	a := mustGet(t, r1, "a")
	if a.Owner != "r2" || a.State != store.StateLeased || a.LeaseID != "la" {
		t.Errorf("adopted task: %+v, want leased under la, owned by r2", a)
	}
	checkNear(t, "adopted LeaseExpiry", a.LeaseExpiry, start.Add(5*time.Minute))
	checkUnchanged(t, r1, bBefore)
	checkUnchanged(t, r1, qBefore)
	// Its results count on r2, and r1 can no longer requeue it.
	checkErr(t, call("Requeue", "a", "la"), r1.Requeue(t.Context(), "a", "la"), store.ErrConflict)
	if err := r2.Requeue(t.Context(), "a", "la"); err != nil {
		t.Errorf("Requeue by the adopter = %v, want nil", err)
	}
}

// RenewLeases extends only current leases of tasks the replica owns, and
// returns the others.
func testClusterRenewLeases(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	mustCreateAll(t, r1, clusterTask("a", "r1", 0), clusterTask("b", "r1", 0), clusterTask("theirs", "r2", 0), clusterTask("queued", "r1", 0))
	mustClaim(t, r1, "a", store.Lease{ID: "la", Delegate: "d", Attempt: 1})
	mustClaim(t, r1, "b", store.Lease{ID: "lb", Delegate: "d", Attempt: 1})
	mustClaim(t, r2, "theirs", store.Lease{ID: "lt", Delegate: "d", Attempt: 1})
	bBefore, theirsBefore := mustGet(t, r1, "b"), mustGet(t, r1, "theirs")
	refs := []store.LeaseRef{
		{TaskID: "a", LeaseID: "la"}, {TaskID: "b", LeaseID: "stale"}, {TaskID: "theirs", LeaseID: "lt"},
		{TaskID: "queued", LeaseID: ""}, {TaskID: "unknown", LeaseID: "x"},
	}
	start := time.Now()
	missed, err := r1.RenewLeases(t.Context(), "r1", refs, 10*time.Minute)
	if err != nil {
		t.Fatalf("RenewLeases = %v", err)
	}
	if !slices.Equal(missed, refs[1:]) {
		t.Errorf("RenewLeases returned %v, want %v", missed, refs[1:])
	}
	checkNear(t, "renewed LeaseExpiry", mustGet(t, r1, "a").LeaseExpiry, start.Add(10*time.Minute))
	checkUnchanged(t, r1, bBefore)
	checkUnchanged(t, r1, theirsBefore)
}
