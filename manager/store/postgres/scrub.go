package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// defaultScrubChunk caps the tasks one ScrubFinished round reads and
// rewrites.
const defaultScrubChunk = 500

// ScrubFinished rewrites the payload of every final task that is not
// payload_scrubbed (made final before schema version 2, by a Complete
// that kept the payload whole) with what scrub returns, and marks it. It
// works in rounds of at most a few hundred tasks, found through a partial
// index, each read in one statement, scrubbed outside any transaction and
// written in one transaction; a task another manager scrubbed or pruned
// meanwhile is skipped. It returns how many it rewrote, store.ErrClosed
// after Close, and ctx's or scrub's error with the count so far.
func (db *DB) ScrubFinished(ctx context.Context, scrub store.ScrubFunc) (int, error) {
	total := 0
	for {
		n, more, err := db.scrubRound(ctx, scrub)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// scrubRound scrubs one chunk in a call of its own (so that Close need not
// wait for a whole scrub), and reports whether there may be more.
func (db *DB) scrubRound(ctx context.Context, scrub store.ScrubFunc) (int, bool, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return 0, false, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `
		SELECT id, payload FROM tasks
		WHERE state IN ('succeeded', 'failed') AND NOT payload_scrubbed
		ORDER BY id LIMIT $1`, db.scrubChunk)
	if err != nil {
		return 0, false, wrapErr("scrub finished tasks", err)
	}
	type found struct {
		id      string
		payload []byte
	}
	fs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (found, error) {
		var f found
		return f, row.Scan(&f.id, &f.payload)
	})
	if err != nil {
		return 0, false, wrapErr("scrub finished tasks", err)
	}
	if len(fs) == 0 {
		return 0, false, nil
	}
	for i := range fs {
		if fs[i].payload, err = scrub(fs[i].id, fs[i].payload); err != nil {
			return 0, false, wrapErr("scrub task "+fs[i].id, err)
		}
	}
	n := 0
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		n = 0
		for _, f := range fs {
			tag, err := tx.Exec(ctx, `
				UPDATE tasks SET payload = $2, payload_scrubbed = true
				WHERE id = $1 AND state IN ('succeeded', 'failed') AND NOT payload_scrubbed`,
				f.id, orEmpty(f.payload))
			if err != nil {
				return err
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, false, wrapErr("scrub finished tasks", err)
	}
	return n, len(fs) == db.scrubChunk, nil
}
