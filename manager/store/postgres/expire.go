package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
)

// The cluster's sweep in the store: leases that lapsed, whoever owned
// the task, and unowned queued tasks past their timers. Any replica runs
// it; each task is changed in a transaction of its own, under a
// condition that re-checks what selected it, so replicas sweeping at
// once change each task once.

// leaseLapsed holds for a leased task t whose lease lapsed more than $A
// microseconds ago, ordered tasks $B more (A and B are filled in).
const leaseLapsed = `t.state = 'leased' AND t.lease_expiry < now() - $A * interval '1 microsecond'
	AND (t.order_key = '' OR t.lease_expiry < now() - $B * interval '1 microsecond')`

// lapsedCond is leaseLapsed with its margins as parameters a and b.
func lapsedCond(a, b int) string {
	return strings.NewReplacer("$A", fmt.Sprintf("$%d", a), "$B", fmt.Sprintf("$%d", b)).Replace(leaseLapsed)
}

// ExpireLeases takes back every leased task whose lease lapsed more than
// margin ago (ordered tasks: margin plus orderMargin, by which time the
// agent has stopped its AWS calls), whoever owns it: queued again,
// unowned, keeping its attempt count, its queue deadline started again,
// with an EventQueued; or, when it used its attempts, failed
// DELEGATE_LOST with an EventFinal. It returns the tasks it changed, as
// they are now.
func (db *DB) ExpireLeases(ctx context.Context, margin, orderMargin time.Duration) ([]*store.Task, error) {
	type lapsed struct {
		id, lease, delegate string
		last                bool
		max                 int
	}
	var found []lapsed
	err := db.read(ctx, "expire leases", func(ctx context.Context) error {
		rows, err := db.pool.Query(ctx, `
			SELECT t.id, t.lease_id, t.delegate, t.attempt >= t.max_attempts, t.max_attempts FROM tasks t
			WHERE `+lapsedCond(1, 2)+`
			ORDER BY t.lease_expiry`,
			margin.Microseconds(), (margin + orderMargin).Microseconds())
		if err != nil {
			return err
		}
		var l lapsed
		_, err = pgx.ForEachRow(rows, []any{&l.id, &l.lease, &l.delegate, &l.last, &l.max}, func() error {
			found = append(found, l)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []*store.Task
	for _, l := range found {
		var (
			t   *store.Task
			err error
		)
		if l.last {
			msg := fmt.Sprintf("delegate %s stopped renewing the lease and the task used all %d attempts", l.delegate, l.max)
			t, err = db.failTask(ctx, "expire lease of", l.id, "DELEGATE_LOST", msg,
				`t.lease_id = $4 AND t.attempt >= t.max_attempts AND `+lapsedCond(5, 6),
				l.lease, margin.Microseconds(), (margin + orderMargin).Microseconds())
		} else {
			t, err = db.takeBack(ctx, l.id, l.lease, margin, orderMargin)
		}
		if err != nil {
			return out, err
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// takeBack queues leased task id again, unowned, if its lease is still
// lease and lapsed, with an EventQueued in the same statement; nil if it
// no longer was.
func (db *DB) takeBack(ctx context.Context, id, lease string, margin, orderMargin time.Duration) (*store.Task, error) {
	var t *store.Task
	err := db.read(ctx, "expire lease of "+id, func(ctx context.Context) error {
		var err error
		t, err = scanTask(db.pool.QueryRow(ctx, `
			WITH r AS (
				UPDATE tasks t SET state = 'queued', lease_id = '', delegate = '', owner = '', lease_expiry = NULL,
					updated_at = now(), `+restartQueue+`
				WHERE t.id = $1 AND t.lease_id = $2 AND t.attempt < t.max_attempts AND `+lapsedCond(3, 4)+`
				RETURNING `+taskColumns+`)
			SELECT `+qualified("r", taskColumns)+` FROM r LEFT JOIN LATERAL (SELECT pg_notify($5, 'q')) n ON true`,
			id, lease, margin.Microseconds(), (margin + orderMargin).Microseconds(), db.channel))
		if errors.Is(err, pgx.ErrNoRows) {
			t, err = nil, nil
		}
		return err
	})
	return t, err
}

// ExpireQueued fails every unowned queued task that heads its order
// chain (or has none) and is past its deadline (TIMEOUT) or its queue
// deadline (NO_ELIGIBLE_DELEGATE), with its EventFinal and its chain's
// next head; it returns them as they are now. A task waiting behind an
// earlier one of its chain never expires: its timers start when it
// becomes the head.
func (db *DB) ExpireQueued(ctx context.Context) ([]*store.Task, error) {
	type late struct {
		id                string
		timedOut          bool
		taskFor, queueFor *float64
		selectors         []string
		scope             store.Scope
	}
	var found []late
	err := db.read(ctx, "expire queued tasks", func(ctx context.Context) error {
		rows, err := db.pool.Query(ctx, `
			SELECT t.id, coalesce(t.deadline < now(), false),
				extract(epoch FROM t.task_timeout)::float8, extract(epoch FROM t.queue_timeout)::float8,
				t.selectors, t.scope_account, t.scope_org, t.scope_project
			FROM tasks t
			WHERE t.state = 'queued' AND t.owner = '' AND (t.queue_deadline < now() OR t.deadline < now())
				AND `+isHead+`
			ORDER BY t.created_at, t.id`)
		if err != nil {
			return err
		}
		var l late
		_, err = pgx.ForEachRow(rows, []any{&l.id, &l.timedOut, &l.taskFor, &l.queueFor, &l.selectors,
			&l.scope.Account, &l.scope.Org, &l.scope.Project}, func() error {
			found = append(found, l)
			return nil
		})
		return err
	})
	if err != nil || len(found) == 0 {
		return nil, err
	}
	var delegates []store.DelegateRecord
	if slices.ContainsFunc(found, func(l late) bool { return !l.timedOut }) {
		if delegates, err = db.Delegates(ctx); err != nil {
			return nil, err
		}
	}
	const pending = `t.state = 'queued' AND t.owner = '' AND ` + isHead
	var out []*store.Task
	for _, l := range found {
		var t *store.Task
		if l.timedOut {
			msg := fmt.Sprintf("task did not complete within its deadline of %s", seconds(l.taskFor))
			t, err = db.failTask(ctx, "expire", l.id, "TIMEOUT", msg, pending+` AND t.deadline < now()`)
		} else {
			msg := noEligible(seconds(l.queueFor), l.selectors, l.scope, delegates)
			t, err = db.failTask(ctx, "expire", l.id, "NO_ELIGIBLE_DELEGATE", msg, pending+` AND t.queue_deadline < now()`)
		}
		if err != nil {
			return out, err
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// read runs fn, a statement or two on the pool, in an entered call, and
// wraps its error with what.
func (db *DB) read(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	return wrapErr(what, fn(ctx))
}

// seconds is a length read as seconds (extract(epoch ...)).
func seconds(s *float64) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(*s * float64(time.Second)).Round(time.Millisecond)
}

// noEligible is the NO_ELIGIBLE_DELEGATE message of a task the store
// fails, worded as the dispatcher words its own: which selectors and
// scope the task needs, and the delegates connected anywhere in the
// cluster whose scope overlaps the task's (never more than its operator
// may list).
func noEligible(within time.Duration, selectors []string, scope store.Scope, ds []store.DelegateRecord) string {
	sel := "a delegate"
	switch {
	case len(selectors) > 0:
		sel += " with all of the selectors [" + strings.Join(selectors, ", ") + "]"
	case scope.IsZero():
		sel = "any delegate (no selectors)"
	}
	if !scope.IsZero() {
		sel += " whose token's scope is " + scope.String() + " or above it (or an unscoped one)"
	}
	return fmt.Sprintf("no eligible delegate within %s: the task needs %s; %s", within, sel, connected(scope, ds))
}

// connected describes the delegate records overlapping scope, as the
// dispatcher's connectedTagsLocked describes its own delegates.
func connected(scope store.Scope, ds []store.DelegateRecord) string {
	var names []store.DelegateRecord
	for _, d := range ds {
		if !strings.HasPrefix(d.Name, "smd:") && scopes.Overlaps(scope, d.Scope) {
			names = append(names, d)
		}
	}
	if len(names) == 0 && scope.IsZero() {
		return "no delegates are connected"
	}
	if len(names) == 0 {
		return "no delegates of scope " + scope.String() + " or of a scope above or below it are connected"
	}
	slices.SortFunc(names, func(a, b store.DelegateRecord) int { return strings.Compare(a.Name, b.Name) })
	const maxListed = 20
	s := "connected delegates:"
	for i, d := range names {
		if i == maxListed {
			s += fmt.Sprintf(" … and %d more", len(names)-maxListed)
			break
		}
		state := ""
		if d.Draining {
			state = " (draining)"
		}
		sc := ""
		if !d.Scope.IsZero() {
			sc = " scope " + d.Scope.String()
		}
		tags := slices.Sorted(slices.Values(d.Tags))
		s += fmt.Sprintf(" %s%s%s [%s];", d.Name, state, sc, strings.Join(tags, ", "))
	}
	return s[:len(s)-1]
}
