package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store/postgres"
)

// mustLockCluster takes db's manager lock shared, as a replica of
// cluster; it is released when the test ends.
func mustLockCluster(t *testing.T, db *postgres.DB, owner, cluster string) *postgres.Lock {
	t.Helper()
	l, err := db.Lock(t.Context(), postgres.LockOptions{Owner: owner, Cluster: cluster, Wait: -1, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Lock(%q, cluster %q) = %v, want nil", owner, cluster, err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close of %q's lock = %v", owner, err)
		}
	})
	return l
}

// lockRecord reads schema's manager_lock row with its cluster.
func lockRecord(t *testing.T, dsn, schema string) (epoch int64, owner, cluster string) {
	t.Helper()
	conn := connect(t, dsn)
	if err := conn.QueryRow(t.Context(), "SELECT epoch, owner, cluster FROM "+schema+".manager_lock").Scan(&epoch, &owner, &cluster); err != nil {
		t.Fatal(err)
	}
	return epoch, owner, cluster
}

// refused fails t unless err is a *LockedError whose message says each
// of want, and returns it.
func refused(t *testing.T, what string, err error, want ...string) *postgres.LockedError {
	t.Helper()
	var locked *postgres.LockedError
	if !errors.As(err, &locked) || !errors.Is(err, postgres.ErrLocked) {
		t.Fatalf("%s = %v, want a *LockedError", what, err)
	}
	t.Logf("%s refused: %v", what, err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s's error does not say %q:\n%v", what, w, err)
		}
	}
	return locked
}

// Replicas of one cluster hold the lock together; the first records the
// cluster (a new epoch), the others change nothing.
func TestIssue11LockClusterSharedByReplicas(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	la := mustLockCluster(t, a, "smd manager host-a pid 1", "prod")
	lb := mustLockCluster(t, b, "smd manager host-b pid 2", "prod")
	if epoch, owner, cluster := lockRecord(t, dsn, schema); epoch != 1 || owner != "smd manager host-a pid 1" || cluster != "prod" {
		t.Errorf("record = %d, %q, %q; want 1, the first replica, prod", epoch, owner, cluster)
	}
	got := lockHolders(t, connect(t, dsn), schema)
	slices.Sort(got)
	want := []uint32{la.BackendPID(), lb.BackendPID()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("holders = %v, want both replicas %v", got, want)
	}
	// Through the store.ClusterLocker interface as well.
	l, err := b.LockCluster(t.Context(), "smd manager host-c pid 3", "prod")
	if err != nil {
		t.Fatalf("LockCluster = %v", err)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A replica is refused while a single manager holds the lock, with an
// error naming it; nothing changes.
func TestIssue11LockClusterRefusedBySingleManager(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	single := mustLock(t, a, "smd manager single pid 7")
	pid := single.BackendPID()
	_, err := b.Lock(t.Context(), postgres.LockOptions{Owner: "smd manager replica", Cluster: "prod", Wait: 300 * time.Millisecond})
	locked := refused(t, "a replica's Lock", err, "is in use by another manager", `"smd manager single pid 7"`,
		fmt.Sprintf("backend pid %d", pid), fmt.Sprintf("pg_terminate_backend(%d)", pid))
	if locked.Holder == nil || locked.Holder.Shared || len(locked.More) != 0 {
		t.Errorf("holders %+v %+v, want the single manager only", locked.Holder, locked.More)
	}
	if epoch, owner, cluster := lockRecord(t, dsn, schema); epoch != 1 || owner != "smd manager single pid 7" || cluster != "" {
		t.Errorf("record after the refusal = %d, %q, %q; want the single manager's", epoch, owner, cluster)
	}
	if got := lockHolders(t, connect(t, dsn), schema); !slices.Equal(got, []uint32{pid}) {
		t.Errorf("holders after the refusal = %v, want [%d]", got, pid)
	}
}

// A single manager is refused while replicas hold the lock, with an
// error naming every one of them and their cluster; nothing changes.
func TestIssue11LockInstanceRefusedByReplicas(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	c := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	la := mustLockCluster(t, a, "smd manager host-a pid 1", "prod")
	lb := mustLockCluster(t, b, "smd manager host-b pid 2", "prod")
	_, err := c.LockInstance(t.Context(), "smd manager single")
	locked := refused(t, "a single manager's LockInstance", err, `the replicas of cluster "prod"`,
		`"smd manager host-a pid 1"`, `"smd manager host-b pid 2"`,
		fmt.Sprintf("pg_terminate_backend(%d)", la.BackendPID()), fmt.Sprintf("pg_terminate_backend(%d)", lb.BackendPID()))
	if locked.Cluster != "prod" || locked.Holder == nil || !locked.Holder.Shared || len(locked.More) != 1 {
		t.Errorf("refusal: cluster %q, holders %+v %+v; want prod and two replicas", locked.Cluster, locked.Holder, locked.More)
	}
	if epoch, _, cluster := lockRecord(t, dsn, schema); epoch != 1 || cluster != "prod" {
		t.Errorf("record after the refusal = %d, %q; want 1, prod", epoch, cluster)
	}
	if got := lockHolders(t, connect(t, dsn), schema); len(got) != 2 {
		t.Errorf("holders after the refusal = %v, want the two replicas", got)
	}
}

// A replica of another cluster is refused while replicas hold the lock;
// once they let go, it takes it and records its cluster.
func TestIssue11LockClusterRefusedByAnotherCluster(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	la := mustLockCluster(t, a, "smd manager prod-1", "prod")
	_, err := b.Lock(t.Context(), postgres.LockOptions{Owner: "smd manager staging-1", Cluster: "staging", Wait: 300 * time.Millisecond})
	refused(t, "another cluster's Lock", err, `the replicas of cluster "prod"`, `"smd manager prod-1"`,
		fmt.Sprintf("pg_terminate_backend(%d)", la.BackendPID()))
	if epoch, _, cluster := lockRecord(t, dsn, schema); epoch != 1 || cluster != "prod" {
		t.Errorf("record after the refusal = %d, %q; want 1, prod", epoch, cluster)
	}
	if got := lockHolders(t, connect(t, dsn), schema); !slices.Equal(got, []uint32{la.BackendPID()}) {
		t.Errorf("holders after the refusal = %v, want prod's replica only", got)
	}
	if err := la.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustLockCluster(t, b, "smd manager staging-1", "staging")
	if epoch, _, cluster := lockRecord(t, dsn, schema); epoch != 2 || cluster != "staging" {
		t.Errorf("record = %d, %q; want 2, staging", epoch, cluster)
	}
}

// Replicas of two clusters starting at once: those holding the lock
// afterwards all belong to one cluster.
func TestIssue11LockClusterRacingClusters(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	const n = 4
	var (
		mu  sync.Mutex
		won = map[string]int{}
		wg  sync.WaitGroup
	)
	for i := range 2 * n {
		cluster := []string{"blue", "green"}[i%2]
		db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
		wg.Go(func() {
			l, err := db.Lock(context.Background(), postgres.LockOptions{Owner: fmt.Sprintf("%s-%d", cluster, i), Cluster: cluster, Wait: -1})
			if err != nil {
				if !errors.Is(err, postgres.ErrLocked) {
					t.Errorf("Lock = %v, want nil or ErrLocked", err)
				}
				return
			}
			t.Cleanup(func() { l.Close(context.Background()) })
			mu.Lock()
			won[cluster]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("replicas holding the lock by cluster: %v, want one cluster", won)
	}
	_, _, cluster := lockRecord(t, dsn, schema)
	if won[cluster] == 0 {
		t.Errorf("record names %q, but the holders are %v", cluster, won)
	}
}

// A replica whose session is killed takes the lock again while another
// replica of its cluster holds it: not stale, the record unchanged.
func TestIssue11LockClusterRetakenAfterTerminate(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	la := mustLockCluster(t, a, "smd manager prod-1", "prod")
	mustLockCluster(t, b, "smd manager prod-2", "prod")
	w := runLock(t, la)
	old := la.BackendPID()
	exec(t, connect(t, dsn), "SELECT pg_terminate_backend($1)", int32(old))
	if held := w.next(t); held {
		t.Fatal("Run's first change after pg_terminate_backend = held, want lost")
	}
	if held := w.next(t); !held {
		t.Fatal("Run's second change = lost, want held again")
	}
	if pid := la.BackendPID(); pid == old || !slices.Contains(lockHolders(t, connect(t, dsn), schema), pid) {
		t.Errorf("after Run took it again: session %d (killed %d) not among the holders", pid, old)
	}
	if epoch, _, cluster := lockRecord(t, dsn, schema); epoch != 1 || cluster != "prod" {
		t.Errorf("record = %d, %q; want 1, prod (unchanged)", epoch, cluster)
	}
	mustCreate(t, a, "after-retake")
}

// While a replica had lost the lock, a single manager held it (and let
// go): taking it again, Run finds the replica's view stale.
func TestIssue11LockClusterStaleAfterSingleManager(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	l := mustLockCluster(t, db, "smd manager prod-1", "prod")
	w := runLock(t, l)
	single := takeOver(t, dsn, schema, l, w)
	exec(t, single, "UPDATE "+schema+".manager_lock SET epoch = epoch + 1, owner = 'smd manager single', cluster = '', acquired_at = now()")
	exec(t, single, "SELECT pg_advisory_unlock_all()")
	var err error
	select {
	case held := <-w.changes:
		t.Fatalf("Run reported held=%v after a single manager held the lock, want ErrLockStale", held)
	case err = <-w.done:
		w.done <- err // for the cleanup
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60s")
	}
	if !errors.Is(err, postgres.ErrLockStale) || !strings.Contains(err.Error(), "smd manager single") {
		t.Errorf("Run = %v, want ErrLockStale naming the single manager", err)
	}
	if _, err := db.GetTask(t.Context(), "any"); !errors.Is(err, postgres.ErrLockStale) {
		t.Errorf("GetTask after a stale lock = %v, want ErrLockStale", err)
	}
}
