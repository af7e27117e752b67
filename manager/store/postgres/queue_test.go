package postgres_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/storetest"
)

// Pull's scope rule in SQL is scopes.Serves: for every pair of a
// delegate's scope and a task's, a pull takes the task exactly when
// Serves says the delegate may run it.
func TestIssue11ServesInSQL(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema, Replica: "r", LeaseDuration: storetest.ClusterLease})
	all := []store.Scope{
		{},
		{Account: "acme"},
		{Account: "acme", Org: "pay"},
		{Account: "acme", Org: "pay", Project: "web"},
		{Account: "acme", Org: "pay", Project: "api"},
		{Account: "acme", Org: "hr"},
		{Account: "acme", Org: "hr", Project: "web"},
		{Account: "globex"},
		{Account: "globex", Org: "pay"},
		{Account: "globex", Org: "pay", Project: "web"},
	}
	byID := map[string]store.Scope{}
	for i, s := range all {
		id := fmt.Sprintf("task-%d", i)
		byID[id] = s
		if err := db.CreateTask(t.Context(), &store.Task{ID: id, Kind: "ping", Scope: s, MaxAttempts: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, dg := range all {
		got, err := db.Pull(t.Context(), "r", []store.PullWant{{Scope: dg, N: len(all)}})
		if err != nil {
			t.Fatalf("Pull(%q) = %v", dg, err)
		}
		pulled := map[string]bool{}
		for _, task := range got {
			pulled[task.ID] = true
		}
		for id, ts := range byID {
			if want := scopes.Serves(dg, ts); pulled[id] != want {
				t.Errorf("delegate of scope %q, task of scope %q: pulled %v, scopes.Serves says %v", dg, ts, pulled[id], want)
			}
		}
		if _, err := db.Disown(t.Context(), "r", nil); err != nil {
			t.Fatal(err)
		}
	}
}

// Pull walks tasks_pull_idx (the unowned queued tasks, oldest first)
// rather than the tasks table, however long the finished history.
func TestIssue11PullUsesItsIndex(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	db := mustOpenClosed(t, dsn, postgres.Options{Schema: schema, Replica: "r", LeaseDuration: storetest.ClusterLease})
	ctx := t.Context()
	// 20,000 finished tasks, 200 leased ones and 50 queued, unowned.
	err := db.Exec(ctx, `
		INSERT INTO tasks (id, kind, selectors, scope_account, scope_org, scope_project, payload, request_owner, request_id,
			request_hash, state, attempt, max_attempts, lease_id, delegate, code, outcome, created_at, updated_at)
		SELECT 't' || i, 'ping', ARRAY['prod'], '', '', '', '', '', '', '',
			CASE WHEN i <= 20000 THEN 'succeeded' WHEN i <= 20200 THEN 'leased' ELSE 'queued' END,
			1, 3, '', '', '', '', now() - (30000 - i) * interval '1 second', now()
		FROM generate_series(1, 20250) i`)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(ctx, "ANALYZE tasks"); err != nil {
		t.Fatal(err)
	}
	plan, err := db.Explain(ctx, postgres.PullQuery, "r", []string{"prod"}, "", "", "", 10, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "tasks_pull_idx") {
		t.Errorf("Pull's plan does not use tasks_pull_idx:\n%s", plan)
	}
	t.Logf("Pull's plan:\n%s", plan)
	got, err := db.Pull(ctx, "r", []store.PullWant{{Tags: []string{"prod"}, N: 10}})
	if err != nil || len(got) != 10 || got[0].ID != "t20201" {
		t.Errorf("Pull = %d tasks from %v, %v; want 10 from t20201", len(got), got, err)
	}
}
