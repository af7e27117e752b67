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

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	"github.com/smdelegate/smdelegate/manager/store/storetest"
)

// TestConformance runs the store conformance suite against a real server
// (SMD_TEST_POSTGRES_DSN; scripts/test.sh starts one). Each directory the
// suite hands out is a schema of its own, so that parallel tests never
// see each other's rows, and a second open of a directory finds the
// first's.
func TestConformance(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	var schemas sync.Map // dir → schema
	storetest.RunConformance(t, func(t *testing.T, dir string) store.Store {
		name, seen := schemas.LoadOrStore(dir, pgtest.Name("st_"))
		if !seen {
			dropSchemaAtCleanup(t, dsn, name.(string))
		}
		return mustOpen(t, dsn, postgres.Options{Schema: name.(string)})
	})
}

// newSchema returns a schema name of its own for t, dropped when t ends.
// The schema itself is created by Open.
func newSchema(t *testing.T) (dsn, schema string) {
	t.Helper()
	dsn = pgtest.DSN(t)
	schema = pgtest.Name("pt_")
	dropSchemaAtCleanup(t, dsn, schema)
	return dsn, schema
}

func dropSchemaAtCleanup(t *testing.T, dsn, schema string) {
	t.Cleanup(func() { pgtest.Exec(t, dsn, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
}

// mustOpen opens the store; the caller closes it.
func mustOpen(tb testing.TB, dsn string, opts postgres.Options) *postgres.DB {
	tb.Helper()
	db, err := postgres.Open(context.Background(), dsn, opts)
	if err != nil {
		tb.Fatalf("Open(schema %q) = %v", opts.Schema, err)
	}
	return db
}

// mustOpenClosed is mustOpen with a Close at the end of the test.
func mustOpenClosed(tb testing.TB, dsn string, opts postgres.Options) *postgres.DB {
	tb.Helper()
	db := mustOpen(tb, dsn, opts)
	tb.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("Close() = %v", err)
		}
	})
	return db
}

// schemaVersion reads the schema_version table of schema.
func schemaVersion(t *testing.T, dsn, schema string) []int {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT version FROM "+schema+".schema_version")
	if err != nil {
		t.Fatalf("read %s.schema_version: %v", schema, err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return versions
}

// TestOpenMigrates opens one new schema from several stores at once, then
// again: the schema is created once, recorded at the current version in a
// single row, and a reopen changes nothing.
func TestOpenMigrates(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			db, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema})
			if err == nil {
				err = db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open #%d = %v, want nil", i, err)
		}
	}
	want := fmt.Sprint([]int{postgres.SchemaVersion})
	if got := fmt.Sprint(schemaVersion(t, dsn, schema)); got != want {
		t.Errorf("schema_version after concurrent opens = %s, want %s", got, want)
	}

	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	if err := db.CreateTask(t.Context(), &store.Task{ID: "after-migration", Kind: "ping"}); err != nil {
		t.Errorf("CreateTask after migration = %v, want nil", err)
	}
	if got := fmt.Sprint(schemaVersion(t, dsn, schema)); got != want {
		t.Errorf("schema_version after reopening = %s, want %s", got, want)
	}
}

// TestOpenNewerSchema: a database migrated by a newer smd is refused, not
// written to.
func TestOpenNewerSchema(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	mustOpen(t, dsn, postgres.Options{Schema: schema}).Close()
	pgtest.Exec(t, dsn, fmt.Sprintf("UPDATE %s.schema_version SET version = %d", schema, postgres.SchemaVersion+1))

	db, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema})
	if !errors.Is(err, postgres.ErrSchemaTooNew) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want %v", err, postgres.ErrSchemaTooNew)
	}
}

func TestOpenBadSchemaName(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	for _, name := range []string{"Upper", "with space", "semi;colon", "1digit", strings.Repeat("x", 64)} {
		db, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: name})
		if err == nil {
			db.Close()
			t.Errorf("Open(schema %q) = nil, want an error", name)
		}
	}
}

// TestErrorsHideThePassword plants a password in DSNs that fail to parse,
// to connect, or to find their database: no error may hold it.
func TestErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const pw = "planted-Pa55word-7f3a"
	server := pgtest.DSN(t)
	missingDB := pgtest.WithDatabase(server, "smd_no_such_database")
	tests := []struct{ name, dsn string }{
		{"url with a bad port", "postgres://smd:" + pw + "@127.0.0.1:notaport/smd"},
		{"url with a bad escape", "postgres://smd:" + pw + "%zz@127.0.0.1/smd"},
		{"key=value unterminated quote", "host=127.0.0.1 user=smd password='" + pw},
		{"key=value bad port", "host=127.0.0.1 port=x user=smd password=" + pw},
		{"nothing listening", "postgres://smd:" + pw + "@127.0.0.1:1/smd?connect_timeout=5&sslmode=disable"},
		{"missing database", withPassword(missingDB, pw)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, err := postgres.Open(t.Context(), tt.dsn, postgres.Options{})
			if err == nil {
				db.Close()
				t.Fatalf("Open(%s) = nil, want an error", tt.name)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(fmt.Sprintf("%+v", err), pw) {
				t.Errorf("Open(%s) error holds the password: %v", tt.name, err)
			}
			if d := postgres.Describe(tt.dsn); strings.Contains(d, pw) {
				t.Errorf("Describe(%s) = %q holds the password", tt.name, d)
			}
		})
	}
}

// withPassword adds a password to a postgres:// DSN, or to key=value pairs.
func withPassword(dsn, pw string) string {
	if rest, ok := strings.CutPrefix(dsn, "postgres://"); ok {
		if at := strings.Index(rest, "@"); at >= 0 && !strings.Contains(rest[:at], ":") {
			return "postgres://" + rest[:at] + ":" + pw + rest[at:]
		}
	}
	return dsn + " password=" + pw
}

// TestTwoStoresOneDatabase stands in for two manager processes on one
// database: each sees what the other committed, and of claims racing
// through both exactly one wins.
func TestTwoStoresOneDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn, schema := newSchema(t)
	a := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	b := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})

	const tasks, racers = 10, 8
	for i := range tasks {
		if err := a.CreateTask(ctx, &store.Task{ID: fmt.Sprintf("shared-%d", i), Kind: "ping"}); err != nil {
			t.Fatalf("CreateTask = %v", err)
		}
	}
	for i := range tasks {
		id := fmt.Sprintf("shared-%d", i)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for r := range racers {
			s := a
			if r%2 == 1 {
				s = b
			}
			wg.Go(func() {
				errs[r] = s.Claim(ctx, id, store.Lease{ID: fmt.Sprintf("lease-%d", r), Delegate: "d", Attempt: 1})
			})
		}
		wg.Wait()
		won := 0
		for r, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("Claim(%q) by racer %d = %v, want nil or ErrConflict", id, r, err)
			}
		}
		if won != 1 {
			t.Errorf("Claim(%q): %d racers won, want 1", id, won)
		}
	}
	unfinished, err := b.ListUnfinished(ctx)
	if err != nil || len(unfinished) != tasks {
		t.Errorf("ListUnfinished() on the other store = %d tasks, %v, want %d, nil", len(unfinished), err, tasks)
	}
}

// TestPrune deletes only final tasks that finished before the cutoff, in
// chunks.
func TestPrune(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	db.SetPruneChunk(3)

	for i := range 10 {
		id := fmt.Sprintf("done-%d", i)
		mustCreate(t, db, id)
		if err := db.Complete(ctx, id, "", store.Final{State: store.StateFailed, Code: "TIMEOUT"}); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, db, "queued")
	mustCreate(t, db, "leased")
	if err := db.Claim(ctx, "leased", store.Lease{ID: "l", Delegate: "d", Attempt: 1}); err != nil {
		t.Fatal(err)
	}

	if n, err := db.Prune(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("Prune(an hour ago) = %d, %v, want 0, nil", n, err)
	}
	cutoff := time.Now().Add(time.Second)
	mustCreate(t, db, "late") // finished after the cutoff: kept
	if err := db.Complete(ctx, "late", "", store.Final{State: store.StateSucceeded, Code: "OK"}); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, dsn, "UPDATE "+schema+".tasks SET updated_at = now() + interval '1 hour' WHERE id = 'late'")
	if n, err := db.Prune(ctx, cutoff); err != nil || n != 10 {
		t.Errorf("Prune(now) = %d, %v, want 10, nil", n, err)
	}
	all, err := db.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, task := range all {
		left = append(left, task.ID)
	}
	if want := []string{"late", "leased", "queued"}; !slices.Equal(left, want) {
		t.Errorf("tasks after Prune, newest first = %q, want %q", left, want)
	}
}

// TestKeepFinished: the background prune removes finished tasks by itself
// and Close stops it.
func TestKeepFinished(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema, KeepFinished: time.Millisecond, PruneInterval: 20 * time.Millisecond})
	mustCreate(t, db, "done")
	mustCreate(t, db, "queued")
	if err := db.Complete(ctx, "done", "", store.Final{State: store.StateSucceeded, Code: "OK"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := db.GetTask(ctx, "done")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetTask(done) = %v after 10s, want it pruned", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := db.GetTask(ctx, "queued"); err != nil {
		t.Errorf("GetTask(queued) = %v, want it kept", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

func mustCreate(t *testing.T, db *postgres.DB, id string) {
	t.Helper()
	if err := db.CreateTask(t.Context(), &store.Task{ID: id, Kind: "ping"}); err != nil {
		t.Fatalf("CreateTask(%q) = %v", id, err)
	}
}

// TestSynchronousCommit: a role whose sessions default to
// synchronous_commit off still gets durable commits from the store.
func TestSynchronousCommit(t *testing.T) {
	t.Parallel()
	dsn, name := pgtest.Database(t)
	pgtest.Exec(t, dsn, "ALTER DATABASE "+name+" SET synchronous_commit = off")
	db := mustOpenClosed(t, dsn, postgres.Options{})
	got, err := db.Setting(t.Context(), "synchronous_commit")
	if err != nil || got != "on" {
		t.Errorf("synchronous_commit in the store's session = %q, %v, want on", got, err)
	}
}
