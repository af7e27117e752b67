package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/manager/store"
)

// recordCmp compares delegate records without the times the store sets.
var recordCmp = cmp.Options{cmpopts.EquateEmpty(), cmpopts.IgnoreFields(store.DelegateRecord{}, "ConnectedAt", "UpdatedAt")}

// mustDelegates returns the records by name.
func mustDelegates(t *testing.T, s ClusterStore) map[string]store.DelegateRecord {
	t.Helper()
	ds, err := s.Delegates(t.Context())
	if err != nil {
		t.Fatalf("Delegates = %v", err)
	}
	out := map[string]store.DelegateRecord{}
	for _, d := range ds {
		out[d.Name] = d
	}
	return out
}

// checkRecord fails t unless name's record is want (nil: none).
func checkRecord(t *testing.T, s ClusterStore, what, name string, want *store.DelegateRecord) {
	t.Helper()
	got, ok := mustDelegates(t, s)[name]
	switch {
	case want == nil && ok:
		t.Errorf("%s: record %s = %+v, want none", what, name, got)
	case want != nil && !ok:
		t.Errorf("%s: no record %s, want %+v", what, name, *want)
	case want != nil:
		if diff := cmp.Diff(*want, got, recordCmp); diff != "" {
			t.Errorf("%s: record %s (-want +got):\n%s", what, name, diff)
		}
	}
}

// ConnectDelegate's takeover rules: a name is held by one stream in the
// cluster; the same agent reconnecting (instance, token and scope) takes
// it over from any replica, another agent only from a dead replica (or
// its own replica's, whose registry decided already).
func testClusterConnectDelegate(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r2)
	acme := store.Scope{Account: "acme"}
	d1 := store.DelegateRecord{Name: "d1", Replica: "r1", InstanceID: "i1", TokenName: "tok", Scope: acme,
		Tags: []string{"linux", "prod"}, Capacity: 4, Version: "1.2.3", Hostname: "host-a"}
	start := time.Now()
	got, err := r1.ConnectDelegate(t.Context(), d1, nil)
	if err != nil {
		t.Fatalf("ConnectDelegate = %v", err)
	}
	if diff := cmp.Diff(d1, *got, recordCmp); diff != "" {
		t.Errorf("ConnectDelegate returned (-want +got):\n%s", diff)
	}
	checkNear(t, "ConnectedAt", got.ConnectedAt, start)
	checkRecord(t, r2, "connect", "d1", &d1)
	ev.expect(t, "connect", store.Event{Kind: store.EventDelegate, Name: "d1"})

	refused := []struct {
		name string
		d    store.DelegateRecord
		dead []string
	}{
		{"another instance", store.DelegateRecord{Name: "d1", Replica: "r2", InstanceID: "i2", TokenName: "tok", Scope: acme}, nil},
		{"no instance id", store.DelegateRecord{Name: "d1", Replica: "r2", TokenName: "tok", Scope: acme}, nil},
		{"another token", store.DelegateRecord{Name: "d1", Replica: "r2", InstanceID: "i1", TokenName: "other", Scope: acme}, nil},
		{"another scope", store.DelegateRecord{Name: "d1", Replica: "r2", InstanceID: "i1", TokenName: "tok", Scope: store.Scope{Account: "globex"}}, nil},
		{"another replica is dead", store.DelegateRecord{Name: "d1", Replica: "r2", InstanceID: "i2", TokenName: "tok", Scope: acme}, []string{"r3"}},
	}
	for _, c := range refused {
		holder, err := r2.ConnectDelegate(t.Context(), c.d, c.dead)
		if !errors.Is(err, store.ErrExists) {
			t.Errorf("%s: ConnectDelegate = %v, want ErrExists", c.name, err)
			continue
		}
		if holder == nil || holder.Replica != "r1" || holder.InstanceID != "i1" {
			t.Errorf("%s: holder %+v, want r1's record", c.name, holder)
		}
		checkRecord(t, r2, c.name, "d1", &d1)
	}
	ev.expect(t, "refused connects")

	// The same agent reconnecting to r2 takes the name over.
	back := d1
	back.Replica, back.Hostname, back.Tags = "r2", "host-b", []string{"prod"}
	if _, err := r2.ConnectDelegate(t.Context(), back, nil); err != nil {
		t.Fatalf("reconnect on another replica: ConnectDelegate = %v, want nil", err)
	}
	checkRecord(t, r1, "reconnect", "d1", &back)
	ev.expect(t, "reconnect", store.Event{Kind: store.EventDelegate, Name: "d1"})

	// Another agent, while r2 is dead (its caller says so).
	other := store.DelegateRecord{Name: "d1", Replica: "r1", InstanceID: "i9", TokenName: "tok2"}
	if _, err := r1.ConnectDelegate(t.Context(), other, []string{"r2"}); err != nil {
		t.Fatalf("takeover from a dead replica: ConnectDelegate = %v, want nil", err)
	}
	checkRecord(t, r1, "takeover from a dead replica", "d1", &other)
	// Its own replica's registry decided already.
	mine := store.DelegateRecord{Name: "d1", Replica: "r1", InstanceID: "i10", TokenName: "tok3"}
	if _, err := r1.ConnectDelegate(t.Context(), mine, nil); err != nil {
		t.Fatalf("replace on the holder's own replica: ConnectDelegate = %v, want nil", err)
	}
	checkRecord(t, r1, "replace on the same replica", "d1", &mine)
}

// Concurrent connects of one new name under different agents: exactly
// one holds it.
func testClusterConnectRace(t *testing.T, open func(string) ClusterStore) {
	const n = 6
	stores := make([]ClusterStore, n)
	for i := range stores {
		stores[i] = open(string(rune('a' + i)))
	}
	errs := make([]error, n)
	parallel(n, func(i int) {
		r := string(rune('a' + i))
		_, errs[i] = stores[i].ConnectDelegate(t.Context(), store.DelegateRecord{Name: "d", Replica: r, InstanceID: "i" + r}, nil)
	})
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrExists):
			t.Errorf("connect %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d connects won the name, want 1 (errors %v)", won, errs)
	}
}

// UpdateDelegates changes only the records the replica holds; a change
// of tags or draining is announced, a running count alone is not.
// DisconnectDelegate deletes a record only for its holder.
func testClusterUpdateDelegates(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r1)
	d1 := store.DelegateRecord{Name: "d1", Replica: "r1", InstanceID: "i1", Tags: []string{"prod"}, Capacity: 4}
	d2 := store.DelegateRecord{Name: "d2", Replica: "r2", InstanceID: "i2", Tags: []string{"dev"}, Capacity: 2}
	for _, d := range []store.DelegateRecord{d1, d2} {
		if _, err := r1.ConnectDelegate(t.Context(), d, nil); err != nil {
			t.Fatal(err)
		}
	}
	ev.drain(t)

	// r1 updates d1, and tries d2 (r2's): only d1 changes.
	u1, u2 := d1, d2
	u1.Running, u1.Tags = 3, []string{"gpu", "prod"}
	u2.Running, u2.Draining = 2, true
	if err := r1.UpdateDelegates(t.Context(), "r1", []store.DelegateRecord{u1, u2}); err != nil {
		t.Fatalf("UpdateDelegates = %v", err)
	}
	checkRecord(t, r2, "update", "d1", &u1)
	checkRecord(t, r2, "update of another replica's record", "d2", &d2)
	ev.expect(t, "update tags", store.Event{Kind: store.EventDelegate, Name: "d1"})

	u1.Running = 1
	if err := r1.UpdateDelegates(t.Context(), "r1", []store.DelegateRecord{u1}); err != nil {
		t.Fatal(err)
	}
	checkRecord(t, r2, "update running", "d1", &u1)
	ev.expect(t, "update of the running count only")

	u1.Draining = true
	if err := r1.UpdateDelegates(t.Context(), "r1", []store.DelegateRecord{u1}); err != nil {
		t.Fatal(err)
	}
	checkRecord(t, r2, "update draining", "d1", &u1)
	ev.expect(t, "update draining", store.Event{Kind: store.EventDelegate, Name: "d1"})

	if err := r2.DisconnectDelegate(t.Context(), "r2", "d1"); err != nil {
		t.Fatal(err)
	}
	checkRecord(t, r1, "disconnect by another replica", "d1", &u1)
	ev.expect(t, "disconnect by another replica")
	if err := r1.DisconnectDelegate(t.Context(), "r1", "d1"); err != nil {
		t.Fatal(err)
	}
	checkRecord(t, r2, "disconnect", "d1", nil)
	ev.expect(t, "disconnect", store.Event{Kind: store.EventDelegate, Name: "d1"})
	if got := mustDelegates(t, r1); len(got) != 1 {
		t.Errorf("Delegates = %v, want d2 only", got)
	}
}

// DropReplica deletes a dead replica's records and row and disowns its
// queued tasks; its leased tasks stay its own until adopted or expired.
func testClusterDropReplica(t *testing.T, open func(string) ClusterStore) {
	r1, r2 := open("r1"), open("r2")
	ev := listen(t, r2)
	for _, r := range []string{"r1", "r2"} {
		if err := r2.Beat(t.Context(), store.Replica{ID: r, Cluster: "c", Host: "h", PID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []store.DelegateRecord{{Name: "a", Replica: "r1"}, {Name: "b", Replica: "r1"}, {Name: "c", Replica: "r2"}} {
		if _, err := r2.ConnectDelegate(t.Context(), d, nil); err != nil {
			t.Fatal(err)
		}
	}
	mustCreateAll(t, r1, clusterTask("queued", "r1", 0), clusterTask("leased", "r1", 0), clusterTask("theirs", "r2", 0))
	mustClaim(t, r1, "leased", store.Lease{ID: "l", Delegate: "a", Attempt: 1})
	leased, theirs := mustGet(t, r2, "leased"), mustGet(t, r2, "theirs")
	ev.drain(t)

	if err := r2.DropReplica(t.Context(), "r1"); err != nil {
		t.Fatalf("DropReplica = %v", err)
	}
	ds := mustDelegates(t, r2)
	if _, ok := ds["c"]; len(ds) != 1 || !ok {
		t.Errorf("after DropReplica(r1): records %v, want c only", ds)
	}
	if got := mustGet(t, r2, "queued"); got.Owner != "" {
		t.Errorf("dead replica's queued task: owner %q, want none", got.Owner)
	}
	checkUnchanged(t, r2, leased)
	checkUnchanged(t, r2, theirs)
	rs, err := r2.Replicas(t.Context())
	if err != nil || len(rs) != 1 || rs[0].ID != "r2" {
		t.Errorf("Replicas after DropReplica(r1) = %v, %v, want r2 only", rs, err)
	}
	ev.expect(t, "drop replica", store.Event{Kind: store.EventDelegate, Name: "a"},
		store.Event{Kind: store.EventDelegate, Name: "b"}, store.Event{Kind: store.EventQueued})
}
