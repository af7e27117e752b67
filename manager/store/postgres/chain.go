package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// A replica's store (Options.Replica) keeps what a single manager keeps
// in memory about a task's life in the store instead: a change of a task
// sends its event in its transaction, and a task that becomes the head
// of its order chain (no earlier unfinished task with its OrderKey) has
// its timers started again there, since it waits for no replica in
// particular.
//
// The timers' lengths are kept beside them (task_timeout,
// queue_timeout: deadline and queue_deadline minus created_at, written
// by CreateTask): a timer starts again as now() plus its length, however
// often it does.
//
// Order chains are serialized by a transaction advisory lock per order
// key (lockChainOf), taken before the task's row: two tasks of one chain
// finishing at once would each see the other unfinished, and the chain's
// next head would keep the timers of its submission.

const (
	// restartQueue starts a queued task's queue deadline again (a
	// requeue, a lease taken back, a new chain head).
	restartQueue = `queue_deadline = now() + queue_timeout`
	// restartDeadline starts a task's deadline again (a new chain head).
	restartDeadline = `deadline = now() + task_timeout`

	// chainLockClass is the first key of an order chain's advisory
	// lock ("smdo"); the second is the order key's hashtext. Two-key
	// advisory locks never collide with the one-key manager lock.
	chainLockClass = 0x736d646f

	// isHead holds for a task t that is the head of its order chain, or
	// not ordered. (e.order_key <> '' lets the planner use
	// tasks_order_idx, whose predicate it is.)
	isHead = `(t.order_key = '' OR NOT EXISTS (
		SELECT 1 FROM tasks e WHERE e.order_key = t.order_key AND e.order_key <> '' AND e.state IN ('queued', 'leased')
			AND (e.created_at, e.id) < (t.created_at, t.id)))`
)

// inTx runs fn in a transaction of an entered call and commits it. fn
// wraps its own errors (wrapErr); a failed begin or commit is wrapped
// with what.
func (db *DB) inTx(ctx context.Context, what string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return wrapErr(what, err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	return wrapErr(what, tx.Commit(ctx))
}

// lockChainOf returns task id's order key and, for an ordered task,
// takes its chain's lock for the rest of tx. An unknown id is
// store.ErrNotFound.
func lockChainOf(ctx context.Context, tx pgx.Tx, op, id string) (string, error) {
	var key string
	err := tx.QueryRow(ctx, `
		SELECT t.order_key FROM tasks t
			LEFT JOIN LATERAL (SELECT pg_advisory_xact_lock($2, hashtext(t.order_key)) WHERE t.order_key <> '') l ON true
		WHERE t.id = $1`, id, chainLockClass).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("postgres: %s %s: %w", op, id, store.ErrNotFound)
	}
	if err != nil {
		return "", wrapErr(op+" "+id, err)
	}
	return key, nil
}

// finished sends task id's EventFinal in tx and, when it was the head of
// order chain key, makes the next unfinished task of the chain its head:
// that task's timers start again and, if it is unowned, an EventQueued
// is sent. tx holds the chain's lock (lockChainOf), and id is final in
// it.
func (db *DB) finished(ctx context.Context, tx pgx.Tx, id, key string) error {
	if err := db.notifyTx(ctx, tx, store.Event{Kind: store.EventFinal, TaskID: id}); err != nil {
		return wrapErr("notify "+id+" final", err)
	}
	if key == "" {
		return nil
	}
	// x is the finished task: it was the head if no unfinished task of
	// the chain precedes it, and the new head is the first unfinished
	// one after it. A leased one (a stored chain of an older manager)
	// keeps the timers its dispatch gave it.
	_, err := tx.Exec(ctx, `
		WITH head AS (
			UPDATE tasks SET `+restartDeadline+`, `+restartQueue+`
			WHERE state = 'queued' AND id = (
				SELECT h.id FROM tasks h, tasks x
				WHERE x.id = $2 AND h.order_key = $1 AND h.order_key <> '' AND h.state IN ('queued', 'leased')
					AND (h.created_at, h.id) > (x.created_at, x.id)
				ORDER BY h.created_at, h.id LIMIT 1)
			AND NOT EXISTS (
				SELECT 1 FROM tasks e, tasks x
				WHERE x.id = $2 AND e.order_key = $1 AND e.order_key <> '' AND e.state IN ('queued', 'leased')
					AND (e.created_at, e.id) < (x.created_at, x.id))
			RETURNING owner)
		SELECT count(*) FROM head LEFT JOIN LATERAL (SELECT pg_notify($3, 'q') WHERE head.owner = '') n ON true`,
		key, id, db.channel)
	return wrapErr("start the next task of "+id+"'s order chain", err)
}

// completeReplica is Complete for a replica: the transition, its
// EventFinal and its chain's next head, in one transaction.
func (db *DB) completeReplica(ctx context.Context, id, leaseID string, f store.Final) error {
	return db.inTx(ctx, "complete "+id, func(ctx context.Context, tx pgx.Tx) error {
		key, err := lockChainOf(ctx, tx, "complete", id)
		if err != nil {
			return err
		}
		if err := transitionOn(ctx, tx, "complete", id, completeUpdate,
			id, leaseID, string(f.State), f.Code, orEmpty(f.Outcome), time.Now(), orEmpty(f.Payload)); err != nil {
			return err
		}
		return db.finished(ctx, tx, id, key)
	})
}

// failTask makes task id failed with code and msg if cond (SQL on the
// row, alias t; its arguments are $4 on) still holds, in a transaction of its own
// with its EventFinal and its chain's next head, and returns it as it is
// now; nil if cond no longer held. The outcome is a marshaled
// delegate.v1.Outcome, as the dispatcher stores one, and no payload is
// kept (the store cannot tell a secret value from the rest).
func (db *DB) failTask(ctx context.Context, op, id, code, msg, cond string, args ...any) (*store.Task, error) {
	outcome, err := marshalOutcome(code, msg)
	if err != nil {
		return nil, err
	}
	var out *store.Task
	err = db.inTx(ctx, op+" "+id, func(ctx context.Context, tx pgx.Tx) error {
		key, err := lockChainOf(ctx, tx, op, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil // pruned meanwhile
		}
		if err != nil {
			return err
		}
		t, err := scanTask(tx.QueryRow(ctx, `
			UPDATE tasks t SET state = 'failed', code = $2, outcome = $3, updated_at = now(),
				payload = '', payload_scrubbed = true
			WHERE t.id = $1 AND (`+cond+`)
			RETURNING `+taskColumns,
			append([]any{id, code, outcome}, args...)...))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return wrapErr(op+" "+id, err)
		}
		out = t
		return db.finished(ctx, tx, id, key)
	})
	return out, err
}

// marshalOutcome is the stored outcome of a task the store fails itself:
// a delegate.v1.Outcome with code (its name) and msg, as the dispatcher
// marshals one.
func marshalOutcome(code, msg string) ([]byte, error) {
	c, ok := delegatev1.Code_value[code]
	if !ok {
		return nil, fmt.Errorf("postgres: outcome code %q unknown: %w", code, errInvalid)
	}
	return proto.Marshal(&delegatev1.Outcome{Code: delegatev1.Code(c), Message: msg})
}
