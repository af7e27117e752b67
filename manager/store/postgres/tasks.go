package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// taskColumns are the columns scanTask reads, in its order.
const taskColumns = `id, kind, selectors, scope_account, scope_org, scope_project, payload,
	request_owner, request_id, request_hash, state, attempt, max_attempts, lease_id, delegate, code, outcome,
	created_at, updated_at, deadline, queue_deadline, order_key, owner, lease_expiry, origin`

// scanTask reads one row of taskColumns.
func scanTask(row pgx.Row) (*store.Task, error) {
	var (
		t                                    store.Task
		state                                string
		deadline, queueDeadline, leaseExpiry *time.Time
	)
	err := row.Scan(&t.ID, &t.Kind, &t.Selectors, &t.Scope.Account, &t.Scope.Org, &t.Scope.Project,
		&t.Payload, &t.Request.Owner, &t.Request.ID, &t.Request.Hash, &state, &t.Attempt, &t.MaxAttempts, &t.LeaseID, &t.Delegate, &t.Code, &t.Outcome,
		&t.CreatedAt, &t.UpdatedAt, &deadline, &queueDeadline, &t.OrderKey, &t.Owner, &leaseExpiry, &t.Origin)
	if err != nil {
		return nil, err
	}
	t.State = store.State(state)
	t.CreatedAt = t.CreatedAt.UTC()
	t.UpdatedAt = t.UpdatedAt.UTC()
	t.Deadline = fromNull(deadline)
	t.QueueDeadline = fromNull(queueDeadline)
	t.LeaseExpiry = fromNull(leaseExpiry)
	return &t, nil
}

// CreateTask persists a copy of t in StateQueued, whatever t.State says. A
// zero CreatedAt is set to the current time and a zero UpdatedAt to
// CreatedAt; t itself is not modified or retained. It returns an error
// wrapping store.ErrExists if the id is taken, a *store.DuplicateRequestError
// if t.Request.ID is not empty and a task with the same Request.Owner and
// Request.ID exists, store.ErrClosed after Close, and ctx's error if ctx is
// done before the call starts. When it returns nil the task has been
// committed.
//
// t.Owner is stored as given. For a replica (Options.Replica), an
// unowned task's EventQueued is sent in the insert's transaction.
//
// The unique indexes decide both races: of concurrent creates with one id,
// or with one request, exactly one inserts; the others wait for it to
// commit and then fail.
func (db *DB) CreateTask(ctx context.Context, t *store.Task) error {
	if t == nil || t.ID == "" {
		return fmt.Errorf("postgres: create task: empty id: %w", errInvalid)
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()

	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	updated := t.UpdatedAt
	if updated.IsZero() {
		updated = created
	}
	// The task holding the request may be pruned between the failed
	// insert and the look-up; the request is then free, and the insert
	// is tried again.
	for try := 0; ; try++ {
		err := db.insertTask(ctx, t, created, updated)
		if uniqueViolation(err) != "tasks_request_idx" {
			return err
		}
		if try == 2 {
			return fmt.Errorf("postgres: create task %s: request %q taken, but its task not found: %w", t.ID, t.Request.ID, err)
		}
		existing, err := scanTask(db.pool.QueryRow(ctx,
			`SELECT `+taskColumns+` FROM tasks WHERE request_owner = $1 AND request_id = $2 AND request_id <> ''`,
			t.Request.Owner, t.Request.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return classify(fmt.Errorf("postgres: create task %s: find the task of request %q: %w", t.ID, t.Request.ID, err))
		}
		return &store.DuplicateRequestError{Task: existing}
	}
}

// insertTask inserts t as a queued task. A taken id is store.ErrExists;
// a taken request is returned as the unique violation, for CreateTask.
// For a replica, an unowned task's EventQueued is sent by the same
// statement (so in its transaction): only when a row was inserted.
func (db *DB) insertTask(ctx context.Context, t *store.Task, created, updated time.Time) error {
	// ON CONFLICT on the id rather than a unique violation: a racing
	// insert of the same id waits for the first to commit and then
	// inserts nothing, which is ErrExists. The id, the arbiter, is
	// checked before the request index, so a task whose id and request
	// are both taken gets a plain ErrExists.
	var inserted int
	err := db.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO tasks (`+taskColumns+`, task_timeout, queue_timeout)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, NULL, $25,
				$19::timestamptz - $17::timestamptz, $20::timestamptz - $17::timestamptz)
			ON CONFLICT (id) DO NOTHING
			RETURNING owner)
		SELECT count(*) FROM ins
			LEFT JOIN LATERAL (SELECT pg_notify($23, 'q') WHERE ins.owner = '' AND $24) n ON true`,
		t.ID, t.Kind, orEmpty(t.Selectors), t.Scope.Account, t.Scope.Org, t.Scope.Project, orEmpty(t.Payload),
		t.Request.Owner, t.Request.ID, orEmpty(t.Request.Hash),
		t.Attempt, t.MaxAttempts, t.LeaseID, t.Delegate, t.Code, orEmpty(t.Outcome),
		created, updated, nullTime(t.Deadline), nullTime(t.QueueDeadline), t.OrderKey, t.Owner,
		db.channel, db.replica != "", t.Origin).Scan(&inserted)
	switch {
	case uniqueViolation(err) == "tasks_request_idx":
		return err
	case err != nil:
		return classify(fmt.Errorf("postgres: create task %s: %w", t.ID, err))
	case inserted == 0:
		return fmt.Errorf("postgres: create task %s: %w", t.ID, store.ErrExists)
	}
	return nil
}

// GetTask returns the task, or an error wrapping store.ErrNotFound. It
// returns store.ErrClosed after Close.
func (db *DB) GetTask(ctx context.Context, id string) (*store.Task, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	t, err := scanTask(db.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: get task %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: get task %s: %w", id, err))
	}
	return t, nil
}

// Claim moves a queued task to StateLeased under l, setting LeaseID,
// Delegate, Attempt (to l.Attempt) and UpdatedAt. It returns an error
// wrapping store.ErrNotFound for an unknown id, store.ErrConflict if the task
// is not queued, store.ErrClosed after Close. l.ID must not be empty: an
// empty lease id means "no lease" to Complete.
//
// For a replica (Options.Replica) the task must also be owned by it
// (else store.ErrConflict), and its LeaseExpiry becomes the store's now
// plus Options.LeaseDuration.
//
// A claim racing another change of the same task waits for it to commit
// and then decides on the task as that change left it. It does not skip a
// locked row (FOR UPDATE SKIP LOCKED), which suits a query for "the next
// task anyone may take" but not a claim by id: the dispatcher takes
// ErrConflict to mean another manager owns the task, and forgets it, so a
// conflict must never be reported for a row whose lock holder might still
// roll back.
func (db *DB) Claim(ctx context.Context, id string, l store.Lease) error {
	if l.ID == "" {
		return fmt.Errorf("postgres: claim %s: empty lease id: %w", id, errInvalid)
	}
	if db.replica != "" {
		// A replica's claim: only of a task it owns, and the lease's
		// expiry from the store's clock (ExpireLeases reads it).
		return db.transition(ctx, "claim", id, `
			UPDATE tasks SET state = 'leased', lease_id = $2, delegate = $3, attempt = $4, updated_at = $5,
				lease_expiry = now() + $6 * interval '1 microsecond'
			WHERE id = $1 AND state = 'queued' AND owner = $7`,
			id, l.ID, l.Delegate, l.Attempt, time.Now(), db.leaseDuration.Microseconds(), db.replica)
	}
	return db.transition(ctx, "claim", id, `
		UPDATE tasks SET state = 'leased', lease_id = $2, delegate = $3, attempt = $4, updated_at = $5
		WHERE id = $1 AND state = 'queued'`,
		id, l.ID, l.Delegate, l.Attempt, time.Now())
}

// Requeue moves a leased task back to StateQueued, keeping Attempt and
// clearing LeaseID and Delegate. It returns an error wrapping
// store.ErrConflict unless the task is leased under leaseID,
// store.ErrNotFound for an unknown id, store.ErrClosed after Close. For a
// replica the task must also be owned by it (else store.ErrConflict); it
// stays owned, its LeaseExpiry is cleared and its queue deadline starts
// again (chain.go).
func (db *DB) Requeue(ctx context.Context, id, leaseID string) error {
	if db.replica != "" {
		// A replica's requeue: only of a task it owns, which stays its
		// own; the task waits in the queue again, so its queue deadline
		// restarts with its original length (see restartQueue).
		return db.transition(ctx, "requeue", id, `
			UPDATE tasks SET state = 'queued', lease_id = '', delegate = '', updated_at = $3, lease_expiry = NULL,
				`+restartQueue+`
			WHERE id = $1 AND state = 'leased' AND lease_id = $2 AND owner = $4`,
			id, leaseID, time.Now(), db.replica)
	}
	return db.transition(ctx, "requeue", id, `
		UPDATE tasks SET state = 'queued', lease_id = '', delegate = '', updated_at = $3
		WHERE id = $1 AND state = 'leased' AND lease_id = $2`,
		id, leaseID, time.Now())
}

// Complete makes a task final with f's state, code and outcome, keeping its
// lease and delegate, and replaces its payload with f.Payload (marking it
// payload_scrubbed) in the same statement. With a non-empty leaseID the task must be leased under
// it; with an empty one it may be queued or leased. Otherwise, and for a task
// that is already final, it returns an error wrapping store.ErrConflict. It
// returns store.ErrNotFound for an unknown id and store.ErrClosed after
// Close. f.State must be final.
//
// For a replica, any replica may complete a task under its current lease
// (the fence is the lease, whichever stream carried the result); the
// task's EventFinal is sent, and when the task was the head of its order
// chain the next one becomes the head, in the same transaction
// (completeReplica).
func (db *DB) Complete(ctx context.Context, id, leaseID string, f store.Final) error {
	if !f.State.Final() {
		return fmt.Errorf("postgres: complete %s: state %q is not final: %w", id, f.State, errInvalid)
	}
	if db.replica != "" {
		return db.completeReplica(ctx, id, leaseID, f)
	}
	return db.transition(ctx, "complete", id, completeUpdate,
		id, leaseID, string(f.State), f.Code, orEmpty(f.Outcome), time.Now(), orEmpty(f.Payload))
}

// completeUpdate is Complete's conditional UPDATE, for transition.
const completeUpdate = `
		UPDATE tasks SET state = $3, code = $4, outcome = $5, updated_at = $6, payload = $7, payload_scrubbed = true
		WHERE id = $1 AND state IN ('queued', 'leased')
			AND ($2 = '' OR (state = 'leased' AND lease_id = $2))`

// transition runs update, a conditional UPDATE of task id ($1), and tells
// why it changed nothing: store.ErrNotFound if there is no such task,
// store.ErrConflict if its condition did not hold.
//
// Both answers come from one statement. Under READ COMMITTED the UPDATE
// waits for a concurrent change of the row and re-checks its condition on
// the committed row, so of racing transitions exactly one matches; the
// EXISTS reads the statement's snapshot, which is enough, since tasks are
// never deleted but by Prune, and only when final.
func (db *DB) transition(ctx context.Context, op, id, update string, args ...any) error {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	return transitionOn(ctx, db.pool, op, id, update, args...)
}

// querier is what transitionOn runs on: the pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// transitionOn is transition on q, inside a call already entered.
func transitionOn(ctx context.Context, q querier, op, id, update string, args ...any) error {
	var changed, exists bool
	err := q.QueryRow(ctx, `
		WITH changed AS (`+update+` RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM changed), EXISTS (SELECT 1 FROM tasks WHERE id = $1)`,
		args...).Scan(&changed, &exists)
	switch {
	case err != nil:
		return classify(fmt.Errorf("postgres: %s %s: %w", op, id, err))
	case changed:
		return nil
	case !exists:
		return fmt.Errorf("postgres: %s %s: %w", op, id, store.ErrNotFound)
	}
	return fmt.Errorf("postgres: %s %s: not in a state that allows it (or a stale lease): %w", op, id, store.ErrConflict)
}

// ListTasks returns the tasks matching f, newest first (by CreatedAt, then
// id descending), after f.After when it is set. A zero or negative
// f.Limit is no limit. It returns
// store.ErrClosed after Close.
func (db *DB) ListTasks(ctx context.Context, f store.Filter) ([]*store.Task, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	var states []string // NULL: any state
	for _, s := range f.States {
		states = append(states, string(s))
	}
	var limit *int // NULL: no limit
	if f.Limit > 0 {
		limit = &f.Limit
	}
	var afterAt *time.Time // NULL: from the newest
	var afterID string
	if f.After != nil {
		afterAt, afterID = &f.After.CreatedAt, f.After.ID
	}
	// $2 = '' leaves the scope out; otherwise Scope.Contains: the same
	// account and, where the filter names them, the same org and project
	// (tasks without a scope have an empty account and never match). $6
	// and $7 are the cursor: the row comparison walks tasks_created_idx.
	rows, err := db.pool.Query(ctx, `
		SELECT `+taskColumns+` FROM tasks
		WHERE ($1::text[] IS NULL OR state = ANY ($1))
			AND ($2 = '' OR (scope_account = $2
				AND ($3 = '' OR (scope_org = $3 AND ($4 = '' OR scope_project = $4)))))
			AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::text COLLATE "C"))
		ORDER BY created_at DESC, id DESC
		LIMIT $5`,
		states, f.Scope.Account, f.Scope.Org, f.Scope.Project, limit, afterAt, afterID)
	if err != nil {
		return nil, wrapErr("list tasks", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Task, error) { return scanTask(row) })
	if err != nil {
		return nil, wrapErr("list tasks", err)
	}
	return out, nil
}

// ListUnfinished returns every queued or leased task, oldest first (by
// CreatedAt, then id). It reads only the unfinished index, never the
// finished history. It returns store.ErrClosed after Close.
func (db *DB) ListUnfinished(ctx context.Context) ([]*store.Task, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `
		SELECT `+taskColumns+` FROM tasks
		WHERE state IN ('queued', 'leased')
		ORDER BY created_at, id`)
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: list unfinished: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Task, error) { return scanTask(row) })
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: list unfinished: %w", err))
	}
	return out, nil
}
