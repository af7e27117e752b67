package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// mustLock takes db's manager lock for owner; it is released when the
// test ends.
func mustLock(t *testing.T, db *postgres.DB, owner string) *postgres.Lock {
	t.Helper()
	l, err := db.Lock(t.Context(), postgres.LockOptions{Owner: owner, Wait: -1, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Lock(%q) = %v, want nil", owner, err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close of %q's lock = %v", owner, err)
		}
	})
	return l
}

// watched is a lock under Run, with what Run reported.
type watched struct {
	changes chan bool // changed(held) calls, in order
	done    chan error
	cancel  context.CancelFunc
}

// runLock runs l.Run until the test ends, which then requires Run to
// return nil.
func runLock(t *testing.T, l *postgres.Lock) *watched {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watched{changes: make(chan bool, 16), done: make(chan error, 1), cancel: cancel}
	go func() { w.done <- l.Run(ctx, func(held bool, _ error) { w.changes <- held }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; err != nil && !errors.Is(err, postgres.ErrLockStale) {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	})
	return w
}

// next is Run's next change.
func (w *watched) next(t *testing.T) bool {
	t.Helper()
	select {
	case held := <-w.changes:
		return held
	case err := <-w.done:
		t.Fatalf("Run returned %v, want it to keep watching", err)
	case <-time.After(60 * time.Second):
		t.Fatal("Run reported no change within 60s")
	}
	return false
}

// connect opens a plain session of the test's own.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs sql on conn, failing t on error.
func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// record reads schema's manager_lock row.
func record(t *testing.T, conn *pgx.Conn, schema string) (epoch int64, owner string) {
	t.Helper()
	if err := conn.QueryRow(t.Context(), "SELECT epoch, owner FROM "+schema+".manager_lock").Scan(&epoch, &owner); err != nil {
		t.Fatal(err)
	}
	return epoch, owner
}

// lockHolders are the server pids holding schema's manager lock.
func lockHolders(t *testing.T, conn *pgx.Conn, schema string) []uint32 {
	t.Helper()
	var database string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&database); err != nil {
		t.Fatal(err)
	}
	key := uint64(postgres.LockKey(database, schema))
	rows, err := conn.Query(t.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, int64(key>>32), int64(uint32(key)))
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint32, len(pids))
	for i, p := range pids {
		out[i] = uint32(p)
	}
	return out
}

// TestIssue10LockRefusesSecondManager: two managers' stores on one schema;
// the second manager's lock is refused with an error naming the first (its
// owner and server pid), and nothing of the first's changes. The stores
// themselves both work: Open takes no lock. Once the first lets go, the
// second gets it.
func TestIssue10LockRefusesSecondManager(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	const ownerA, ownerB = "smd manager host-a pid 1111", "smd manager host-b pid 2222"
	la := mustLock(t, a, ownerA)
	pid := la.BackendPID()

	lb, err := b.Lock(t.Context(), postgres.LockOptions{Owner: ownerB, Wait: 300 * time.Millisecond})
	if err == nil {
		lb.Close(t.Context())
		t.Fatal("second Lock on one schema = nil, want ErrLocked")
	}
	t.Logf("refused: %v", err)
	var locked *postgres.LockedError
	if !errors.As(err, &locked) || !errors.Is(err, postgres.ErrLocked) {
		t.Fatalf("second Lock = %v, want a *LockedError wrapping ErrLocked", err)
	}
	if locked.Holder == nil || locked.Holder.PID != pid || locked.Holder.ApplicationName != ownerA || locked.Holder.Owner != ownerA {
		t.Errorf("second Lock's holder = %+v, want pid %d, application_name and owner %q", locked.Holder, pid, ownerA)
	}
	if locked.Schema != schema {
		t.Errorf("second Lock's schema = %q, want %q", locked.Schema, schema)
	}
	for _, want := range []string{ownerA, fmt.Sprintf("backend pid %d", pid), schema, fmt.Sprintf("pg_terminate_backend(%d)", pid)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Lock's error does not say %q:\n%v", want, err)
		}
	}

	conn := connect(t, dsn)
	if epoch, owner := record(t, conn, schema); epoch != 1 || owner != ownerA {
		t.Errorf("lock record after the refusal = epoch %d, owner %q, want 1, %q", epoch, owner, ownerA)
	}
	if got := lockHolders(t, conn, schema); len(got) != 1 || got[0] != pid {
		t.Errorf("lock holders after the refusal = %v, want [%d]", got, pid)
	}
	mustCreate(t, b, "written-through-the-second-store")

	if err := la.Close(t.Context()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	lb = mustLock(t, b, ownerB)
	if epoch, owner := record(t, conn, schema); epoch != 2 || owner != ownerB {
		t.Errorf("lock record after the second took it = epoch %d, owner %q, want 2, %q", epoch, owner, ownerB)
	}
}

// TestIssue10LockPerSchemaAndDatabase: managers on different schemas of
// one database, or on the same schema of different databases, do not
// exclude each other.
func TestIssue10LockPerSchemaAndDatabase(t *testing.T) {
	t.Parallel()
	dsn, s1 := newSchema(t)
	_, s2 := newSchema(t)
	mustLock(t, mustOpenClosed(t, dsn, postgres.Options{Schema: s1}), "manager on "+s1)
	mustLock(t, mustOpenClosed(t, dsn, postgres.Options{Schema: s2}), "manager on "+s2)

	db1, _ := pgtest.Database(t)
	db2, _ := pgtest.Database(t)
	mustLock(t, mustOpenClosed(t, db1, postgres.Options{}), "manager on db1")
	mustLock(t, mustOpenClosed(t, db2, postgres.Options{}), "manager on db2")
}

// TestIssue10LockWaitsForHolderToGo: a manager that starts while its
// predecessor's session is still ending waits for it rather than failing.
func TestIssue10LockWaitsForHolderToGo(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	la := mustLock(t, a, "predecessor")

	got := make(chan error, 1)
	go func() {
		lb, err := b.Lock(context.Background(), postgres.LockOptions{Owner: "successor", Wait: time.Minute})
		if err == nil {
			err = lb.Close(context.Background())
		}
		got <- err
	}()
	conn := connect(t, dsn)
	for {
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'successor'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := la.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Errorf("Lock while the holder let go = %v, want nil", err)
	}
}

// TestIssue10LockRetakenAfterTerminate: the lock's session is killed on
// the server (pg_terminate_backend); Run reports the loss, takes the lock
// again on a new session, and the store serves again.
func TestIssue10LockRetakenAfterTerminate(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	l := mustLock(t, db, "smd manager terminated")
	w := runLock(t, l)
	old := l.BackendPID()

	// A quiet check interval ends in a round trip (pgx's ping), which
	// is no loss.
	conn := connect(t, dsn)
	for {
		var query string
		if err := conn.QueryRow(t.Context(), "SELECT query FROM pg_stat_activity WHERE pid = $1", int32(old)).Scan(&query); err != nil {
			t.Fatal(err)
		}
		if query == "-- ping" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case held := <-w.changes:
		t.Fatalf("Run reported held=%v after a quiet interval and a ping, want nothing", held)
	default:
	}
	exec(t, conn, "SELECT pg_terminate_backend($1)", int32(old))
	if held := w.next(t); held {
		t.Fatal("Run's first change after pg_terminate_backend = held, want lost")
	}
	if held := w.next(t); !held {
		t.Fatal("Run's second change = lost, want held again")
	}
	pid := l.BackendPID()
	if got := lockHolders(t, conn, schema); len(got) != 1 || got[0] != pid || pid == old {
		t.Errorf("lock holders after Run took it again = %v, want [new session %d], not the killed %d", got, pid, old)
	}
	if epoch, _ := record(t, conn, schema); epoch != 2 {
		t.Errorf("lock epoch after taking it again = %d, want 2", epoch)
	}
	mustCreate(t, db, "after-retake")
}

// queueFor makes conn wait for schema's manager lock (pg_advisory_lock
// blocks in the server's queue) and returns when it gets it. It returns at
// once; wait until the conn is queued with waitQueued.
func queueFor(t *testing.T, conn *pgx.Conn, schema string) <-chan error {
	t.Helper()
	var database string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&database); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_advisory_lock($1)", postgres.LockKey(database, schema))
		got <- err
	}()
	return got
}

// waitQueued returns once the session pid waits for an advisory lock.
func waitQueued(t *testing.T, conn *pgx.Conn, pid uint32) {
	t.Helper()
	for {
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
			int32(pid)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// takeOver kills l's session while another session (returned) waits for
// the lock, so that the other gets it and l's Run cannot: Run must report
// the loss and keep trying.
func takeOver(t *testing.T, dsn, schema string, l *postgres.Lock, w *watched) *pgx.Conn {
	t.Helper()
	thief, admin := connect(t, dsn), connect(t, dsn)
	got := queueFor(t, thief, schema)
	waitQueued(t, admin, thief.PgConn().PID())
	exec(t, admin, "SELECT pg_terminate_backend($1)", int32(l.BackendPID()))
	if err := <-got; err != nil {
		t.Fatalf("the other session's pg_advisory_lock = %v", err)
	}
	if held := w.next(t); held {
		t.Fatal("Run's first change after losing the lock = held, want lost")
	}
	return thief
}

// TestIssue10LockLostFencesStore: while another session holds the lock
// this manager lost, every call of its store fails with ErrLockLost and
// writes nothing; once the other lets go (without taking the record, as a
// manager would), Run takes the lock again and the store serves.
func TestIssue10LockLostFencesStore(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	mustCreate(t, db, "before")
	l := mustLock(t, db, "smd manager fenced")
	w := runLock(t, l)
	thief := takeOver(t, dsn, schema, l, w)

	ctx := t.Context()
	if err := db.CreateTask(ctx, &store.Task{ID: "while-lost", Kind: "ping"}); !errors.Is(err, postgres.ErrLockLost) {
		t.Errorf("CreateTask while the lock is lost = %v, want ErrLockLost", err)
	}
	if err := db.Claim(ctx, "before", store.Lease{ID: "l1", Delegate: "d", Attempt: 1}); !errors.Is(err, postgres.ErrLockLost) {
		t.Errorf("Claim while the lock is lost = %v, want ErrLockLost", err)
	}
	if _, err := db.GetTask(ctx, "before"); !errors.Is(err, postgres.ErrLockLost) {
		t.Errorf("GetTask while the lock is lost = %v, want ErrLockLost", err)
	}
	var n int
	var state string
	if err := thief.QueryRow(ctx, "SELECT count(*), min(state) FROM "+schema+".tasks").Scan(&n, &state); err != nil || n != 1 || state != "queued" {
		t.Errorf("tasks while the lock is lost = %d (%q), %v, want the 1 queued task from before", n, state, err)
	}

	exec(t, thief, "SELECT pg_advisory_unlock_all()")
	if held := w.next(t); !held {
		t.Fatal("Run's change after the other session let go = lost, want held")
	}
	if _, err := db.GetTask(ctx, "before"); err != nil {
		t.Errorf("GetTask after taking the lock again = %v, want nil", err)
	}
	mustCreate(t, db, "after")
}

// TestIssue10LockStaleAfterAnotherManager: while this manager had lost the
// lock, another manager took it (moving the record on, as Lock does) and
// let go. Taking it again, Run finds its memory may be stale: it returns
// ErrLockStale naming the other, and the store stays unusable.
func TestIssue10LockStaleAfterAnotherManager(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	l := mustLock(t, db, "smd manager first")
	w := runLock(t, l)
	other := takeOver(t, dsn, schema, l, w)
	exec(t, other, "UPDATE "+schema+".manager_lock SET epoch = epoch + 1, owner = 'smd manager other', acquired_at = now()")
	exec(t, other, "SELECT pg_advisory_unlock_all()")

	var err error
	select {
	case held := <-w.changes:
		t.Fatalf("Run reported held=%v after another manager held the lock, want it to return ErrLockStale", held)
	case err = <-w.done:
		w.done <- err // for the cleanup
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60s")
	}
	if !errors.Is(err, postgres.ErrLockStale) || !strings.Contains(err.Error(), "smd manager other") {
		t.Errorf("Run = %v, want ErrLockStale naming \"smd manager other\"", err)
	}
	if _, err := db.GetTask(t.Context(), "any"); !errors.Is(err, postgres.ErrLockStale) {
		t.Errorf("GetTask after a stale lock = %v, want ErrLockStale", err)
	}
}
