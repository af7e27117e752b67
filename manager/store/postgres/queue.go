package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The shared queue (store.Cluster): pulls, disowning, adoption and lease
// renewal. Expiry is in expire.go, order chains in chain.go.

// serves is scopes.Serves in SQL, for a task t and a delegate of scope
// ($3, $4, $5): an unscoped delegate runs every task, a task without a
// scope runs on any delegate, and otherwise the delegate's scope
// contains the task's (store.Scope.Contains: the same account and, where
// the delegate's scope names them, the same org and project).
// TestIssue11ServesInSQL compares the two.
const serves = `(($3 = '' AND $4 = '' AND $5 = '')
	OR (t.scope_account = '' AND t.scope_org = '' AND t.scope_project = '')
	OR (t.scope_account = $3 AND ($4 = '' OR (t.scope_org = $4 AND ($5 = '' OR t.scope_project = $5)))))`

// pullQuery takes up to $6 pullable tasks for replica $1 that a delegate
// with tags $2 and scope ($3, $4, $5) may run: queued, unowned, every
// selector among the tags (and at least one selector when $7,
// PullWant.SelectedOnly), served by the scope, the head of its order
// chain; oldest first along tasks_pull_idx, whose predicate the WHERE
// repeats. SKIP LOCKED: a task another pull (or any change) holds is
// left to it, so concurrent pulls take different tasks; the outer
// UPDATE re-checks the owner on the row as committed.
const pullQuery = `
	WITH picked AS (
		SELECT t.id FROM tasks t
		WHERE t.state = 'queued' AND t.owner = ''
			AND t.selectors <@ $2::text[]
			AND (NOT $7::boolean OR cardinality(t.selectors) > 0)
			AND ` + serves + `
			AND ` + isHead + `
		ORDER BY t.created_at, t.id
		LIMIT $6
		FOR UPDATE OF t SKIP LOCKED)
	UPDATE tasks SET owner = $1
	WHERE id IN (SELECT id FROM picked) AND owner = '' AND state = 'queued'
	RETURNING ` + taskColumns

// Pull gives replica up to each want's N pullable tasks that want's
// delegate may run, as its own (Owner = replica), in one transaction,
// oldest first. A want with N ≤ 0 takes nothing.
func (db *DB) Pull(ctx context.Context, replica string, wants []store.PullWant) ([]*store.Task, error) {
	if replica == "" {
		return nil, fmt.Errorf("postgres: pull: empty replica id: %w", errInvalid)
	}
	var out []*store.Task
	err := db.inTx(ctx, "pull", func(ctx context.Context, tx pgx.Tx) error {
		out = out[:0]
		for _, w := range wants {
			if w.N <= 0 {
				continue
			}
			rows, err := tx.Query(ctx, pullQuery, replica, orEmpty(w.Tags), w.Scope.Account, w.Scope.Org, w.Scope.Project, w.N, w.SelectedOnly)
			if err != nil {
				return wrapErr("pull", err)
			}
			ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Task, error) { return scanTask(row) })
			if err != nil {
				return wrapErr("pull", err)
			}
			out = append(out, ts...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *store.Task) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Disown gives back the queued tasks replica owns but those in keep, and
// reports how many; when there are any, an EventQueued is sent in the
// same statement. Their queue deadlines keep running.
func (db *DB) Disown(ctx context.Context, replica string, keep []string) (int, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	return disownOn(ctx, db.pool, db.channel, replica, keep)
}

// disownOn is Disown on q.
func disownOn(ctx context.Context, q querier, channel, replica string, keep []string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `
		WITH d AS (
			UPDATE tasks SET owner = ''
			WHERE owner = $1 AND owner <> '' AND state = 'queued' AND NOT (id = ANY ($2::text[]))
			RETURNING 1),
		c AS (SELECT count(*) AS n FROM d)
		SELECT c.n FROM c LEFT JOIN LATERAL (SELECT pg_notify($3, 'q') WHERE c.n > 0) x ON true`,
		replica, orEmpty(keep), channel).Scan(&n)
	return n, wrapErr("disown the tasks of replica "+replica, err)
}

// leaseArrays splits refs into the two arrays unnest pairs again, sorted
// by task id so that concurrent batches lock rows in one order.
func leaseArrays(refs []store.LeaseRef) (ids, leases []string) {
	refs = slices.Clone(refs)
	slices.SortFunc(refs, func(a, b store.LeaseRef) int { return strings.Compare(a.TaskID, b.TaskID) })
	for _, r := range refs {
		ids, leases = append(ids, r.TaskID), append(leases, r.LeaseID)
	}
	return orEmpty(ids), orEmpty(leases)
}

// Adopt makes replica the owner of each listed task leased under the
// listed lease, and renews those leases by d (from the store's clock);
// it returns the adopted tasks, oldest first.
func (db *DB) Adopt(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]*store.Task, error) {
	if replica == "" {
		return nil, fmt.Errorf("postgres: adopt: empty replica id: %w", errInvalid)
	}
	if len(leases) == 0 {
		return nil, nil
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	ids, ls := leaseArrays(leases)
	rows, err := db.pool.Query(ctx, `
		UPDATE tasks t SET owner = $1, lease_expiry = now() + $4 * interval '1 microsecond'
		FROM unnest($2::text[], $3::text[]) AS l(task_id, lease)
		WHERE t.id = l.task_id AND t.lease_id = l.lease AND t.state = 'leased'
		RETURNING `+qualified("t", taskColumns),
		replica, ids, ls, d.Microseconds())
	if err != nil {
		return nil, wrapErr("adopt", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Task, error) { return scanTask(row) })
	if err != nil {
		return nil, wrapErr("adopt", err)
	}
	slices.SortFunc(out, func(a, b *store.Task) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RenewLeases extends by d (from the store's clock) each listed lease
// that is its task's current one while the task is leased and owned by
// replica, and returns the refs that were not.
func (db *DB) RenewLeases(ctx context.Context, replica string, leases []store.LeaseRef, d time.Duration) ([]store.LeaseRef, error) {
	if len(leases) == 0 {
		return nil, nil
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	ids, ls := leaseArrays(leases)
	rows, err := db.pool.Query(ctx, `
		UPDATE tasks t SET lease_expiry = now() + $4 * interval '1 microsecond'
		FROM unnest($2::text[], $3::text[]) AS l(task_id, lease)
		WHERE t.id = l.task_id AND t.lease_id = l.lease AND t.state = 'leased' AND t.owner = $1
		RETURNING t.id, t.lease_id`,
		replica, ids, ls, d.Microseconds())
	if err != nil {
		return nil, wrapErr("renew leases", err)
	}
	renewed := map[store.LeaseRef]bool{}
	var r store.LeaseRef
	_, err = pgx.ForEachRow(rows, []any{&r.TaskID, &r.LeaseID}, func() error {
		renewed[r] = true
		return nil
	})
	if err != nil {
		return nil, wrapErr("renew leases", err)
	}
	var out []store.LeaseRef
	for _, l := range leases {
		if !renewed[l] {
			out = append(out, l)
		}
	}
	return out, nil
}

// qualified is columns (a comma-separated list) each prefixed with
// alias, for a RETURNING beside a FROM that has columns of the same
// names.
func qualified(alias, columns string) string {
	parts := strings.Split(columns, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}
