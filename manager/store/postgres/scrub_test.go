package postgres_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// TestItem7ScrubLegacyTasks: a database of schema version 1, whose final
// tasks kept their whole payload, is migrated at Open; ScrubFinished then
// passes exactly those tasks to scrub, once each and in chunks, and
// stores what it returns; unfinished tasks and tasks completed since are
// never passed.
func TestItem7ScrubLegacyTasks(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	// The database as smd left it before schema version 2.
	pgtest.Exec(t, dsn, fmt.Sprintf(`CREATE SCHEMA %[1]s; SET search_path TO %[1]s; %[2]s;
		CREATE TABLE schema_version (version integer NOT NULL); INSERT INTO schema_version VALUES (1);`, schema, postgres.MigrationV1))
	row := func(id, state string) string {
		return fmt.Sprintf(`INSERT INTO %s.tasks (id, kind, selectors, scope_account, scope_org, scope_project, payload,
			request_owner, request_id, request_hash, state, attempt, max_attempts, lease_id, delegate, code, outcome, created_at, updated_at)
			VALUES ('%s', 'secret.create', '{}', '', '', '', 'whole payload of %s', '', '', '', '%s', 1, 1, '', '', '', '', now(), now())`,
			schema, id, id, state)
	}
	legacy := []string{"a-done", "b-failed", "c-done", "d-done", "e-done"}
	for i, id := range legacy {
		pgtest.Exec(t, dsn, row(id, []string{"succeeded", "failed"}[i%2]))
	}
	pgtest.Exec(t, dsn, row("f-queued", "queued"))
	pgtest.Exec(t, dsn, row("g-leased", "leased"))

	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema})
	if got, want := fmt.Sprint(schemaVersion(t, dsn, schema)), fmt.Sprint([]int{postgres.SchemaVersion}); got != want {
		t.Fatalf("schema_version after Open = %s, want %s", got, want)
	}
	ctx := t.Context()
	if err := db.Complete(ctx, "g-leased", "", store.Final{State: store.StateFailed, Code: "TIMEOUT", Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	db.SetScrubChunk(2)
	var passed []string
	n, err := db.ScrubFinished(ctx, func(id string, p []byte) ([]byte, error) {
		passed = append(passed, id)
		if string(p) != "whole payload of "+id {
			t.Errorf("scrub(%s) got payload %q", id, p)
		}
		return []byte("scrubbed " + id), nil
	})
	if err != nil || n != len(legacy) || !slices.Equal(passed, legacy) {
		t.Fatalf("ScrubFinished() = %d, %v, passing %q; want %d, nil, passing %q", n, err, passed, len(legacy), legacy)
	}
	for id, want := range map[string]string{
		"a-done": "scrubbed a-done", "e-done": "scrubbed e-done", "f-queued": "whole payload of f-queued", "g-leased": "kept",
	} {
		got, err := db.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Payload) != want {
			t.Errorf("GetTask(%s).Payload = %q, want %q", id, got.Payload, want)
		}
	}
	passed = nil
	if n, err := db.ScrubFinished(ctx, func(id string, p []byte) ([]byte, error) { passed = append(passed, id); return p, nil }); n != 0 || err != nil || passed != nil {
		t.Errorf("ScrubFinished() again = %d, %v, passing %q; want 0, nil, none", n, err, passed)
	}
}
