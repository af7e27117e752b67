package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The delegates connected anywhere in the cluster (store.Cluster): one
// record per name, held by the replica whose stream it is. Each change
// sends EventDelegate(name) in its transaction.

// delegateColumns are the columns scanDelegate reads, in its order.
const delegateColumns = `name, replica, instance_id, token_name, scope_account, scope_org, scope_project,
	tags, capacity, running, draining, version, hostname, connected_at, updated_at`

// scanDelegate reads one row of delegateColumns.
func scanDelegate(row pgx.Row) (*store.DelegateRecord, error) {
	var d store.DelegateRecord
	err := row.Scan(&d.Name, &d.Replica, &d.InstanceID, &d.TokenName, &d.Scope.Account, &d.Scope.Org, &d.Scope.Project,
		&d.Tags, &d.Capacity, &d.Running, &d.Draining, &d.Version, &d.Hostname, &d.ConnectedAt, &d.UpdatedAt)
	if err != nil {
		return nil, err
	}
	d.ConnectedAt, d.UpdatedAt = d.ConnectedAt.UTC(), d.UpdatedAt.UTC()
	return &d, nil
}

// takesOver reports whether d may replace the record held: the holder
// is d's own replica (whose registry decided already), or a replica the
// caller found dead, or d is the same agent reconnecting (the same
// non-empty instance id, under the same token and scope).
func takesOver(held, d *store.DelegateRecord, dead []string) bool {
	return held.Replica == d.Replica || slices.Contains(dead, held.Replica) ||
		d.InstanceID != "" && held.InstanceID == d.InstanceID && held.TokenName == d.TokenName && held.Scope == d.Scope
}

// ConnectDelegate records d as held by d.Replica, replacing a record of
// d.Name that takesOver allows, and returns the record as stored, with
// an EventDelegate in the same transaction (the replica that held the
// name closes its stream on it). Otherwise it changes nothing and
// returns the holder with an error wrapping store.ErrExists.
func (db *DB) ConnectDelegate(ctx context.Context, d store.DelegateRecord, dead []string) (*store.DelegateRecord, error) {
	if d.Name == "" || d.Replica == "" {
		return nil, fmt.Errorf("postgres: connect delegate: empty name or replica: %w", errInvalid)
	}
	var (
		out    *store.DelegateRecord
		holder *store.DelegateRecord
	)
	err := db.inTx(ctx, "connect delegate "+d.Name, func(ctx context.Context, tx pgx.Tx) error {
		// The row lock serializes connects of one name; a name not
		// yet recorded is decided by the primary key (ON CONFLICT).
		for try := 0; ; try++ {
			held, err := scanDelegate(tx.QueryRow(ctx, `SELECT `+delegateColumns+` FROM delegates WHERE name = $1 FOR UPDATE`, d.Name))
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				held = nil
			case err != nil:
				return wrapErr("connect delegate "+d.Name, err)
			}
			if held != nil && !takesOver(held, &d, dead) {
				holder = held
				return fmt.Errorf("postgres: connect delegate %s: held by replica %s: %w", d.Name, held.Replica, store.ErrExists)
			}
			out, err = scanDelegate(tx.QueryRow(ctx, `
				INSERT INTO delegates (`+delegateColumns+`)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now(), now())
				ON CONFLICT (name) DO UPDATE SET replica = EXCLUDED.replica, instance_id = EXCLUDED.instance_id,
					token_name = EXCLUDED.token_name, scope_account = EXCLUDED.scope_account,
					scope_org = EXCLUDED.scope_org, scope_project = EXCLUDED.scope_project, tags = EXCLUDED.tags,
					capacity = EXCLUDED.capacity, running = EXCLUDED.running, draining = EXCLUDED.draining,
					version = EXCLUDED.version, hostname = EXCLUDED.hostname,
					connected_at = EXCLUDED.connected_at, updated_at = EXCLUDED.updated_at
				WHERE $14
				RETURNING `+delegateColumns,
				d.Name, d.Replica, d.InstanceID, d.TokenName, d.Scope.Account, d.Scope.Org, d.Scope.Project,
				orEmpty(d.Tags), d.Capacity, d.Running, d.Draining, d.Version, d.Hostname, held != nil))
			if errors.Is(err, pgx.ErrNoRows) && try < 2 {
				continue // recorded meanwhile by another connect: decide on that record
			}
			if err != nil {
				return wrapErr("connect delegate "+d.Name, err)
			}
			return wrapErr("notify delegate "+d.Name, db.notifyTx(ctx, tx, store.Event{Kind: store.EventDelegate, Name: d.Name}))
		}
	})
	if holder != nil {
		return holder, err
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateDelegates stores the Running, Draining and Tags of the records
// replica holds (others are left alone: a record another replica took
// over is no longer this one's). A record whose Draining or Tags changed
// gets an EventDelegate, in the same transaction; a new running count
// alone does not (it changes every second).
func (db *DB) UpdateDelegates(ctx context.Context, replica string, ds []store.DelegateRecord) error {
	if len(ds) == 0 {
		return nil
	}
	return db.inTx(ctx, "update delegates", func(ctx context.Context, tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, d := range ds {
			// o is the record before the update (the statement's
			// snapshot): only its holder updates it, and a takeover
			// changes its replica, which the UPDATE re-checks.
			b.Queue(`
				WITH o AS (SELECT tags, draining FROM delegates WHERE name = $1 AND replica = $2),
				u AS (
					UPDATE delegates d SET running = $3, draining = $4, tags = $5, updated_at = now()
					FROM o WHERE d.name = $1 AND d.replica = $2
					RETURNING o.tags IS DISTINCT FROM $5::text[] OR o.draining <> $4 AS changed)
				SELECT count(*) FROM u LEFT JOIN LATERAL (SELECT pg_notify($6, 'd' || $1) WHERE u.changed) n ON true`,
				d.Name, replica, d.Running, d.Draining, orEmpty(d.Tags), db.channel)
		}
		br := tx.SendBatch(ctx, b)
		for range ds {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return wrapErr("update delegates", err)
			}
		}
		return wrapErr("update delegates", br.Close())
	})
}

// DisconnectDelegate deletes name's record if replica holds it, with an
// EventDelegate in the same statement.
func (db *DB) DisconnectDelegate(ctx context.Context, replica, name string) error {
	return db.read(ctx, "disconnect delegate "+name, func(ctx context.Context) error {
		_, err := db.pool.Exec(ctx, `
			WITH d AS (DELETE FROM delegates WHERE name = $1 AND replica = $2 RETURNING name)
			SELECT count(*) FROM d LEFT JOIN LATERAL (SELECT pg_notify($3, 'd' || d.name)) n ON true`,
			name, replica, db.channel)
		return err
	})
}

// Delegates returns every record, by name.
func (db *DB) Delegates(ctx context.Context) ([]store.DelegateRecord, error) {
	var out []store.DelegateRecord
	err := db.read(ctx, "list delegates", func(ctx context.Context) error {
		rows, err := db.pool.Query(ctx, `SELECT `+delegateColumns+` FROM delegates ORDER BY name`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.DelegateRecord, error) {
			d, err := scanDelegate(row)
			if err != nil {
				return store.DelegateRecord{}, err
			}
			return *d, nil
		})
		return err
	})
	return out, err
}

// DropReplica forgets replica, found dead: its delegate records go (an
// EventDelegate each), its queued tasks are disowned (an EventQueued),
// and its row is deleted, in one transaction. Its leased tasks stay
// leased: their delegates Adopt them elsewhere, or their leases lapse
// (ExpireLeases).
func (db *DB) DropReplica(ctx context.Context, replica string) error {
	if replica == "" {
		return fmt.Errorf("postgres: drop replica: empty replica id: %w", errInvalid)
	}
	return db.inTx(ctx, "drop replica "+replica, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			WITH d AS (DELETE FROM delegates WHERE replica = $1 RETURNING name)
			SELECT count(*) FROM d LEFT JOIN LATERAL (SELECT pg_notify($2, 'd' || d.name)) n ON true`,
			replica, db.channel); err != nil {
			return wrapErr("drop replica "+replica, err)
		}
		if _, err := disownOn(ctx, tx, db.channel, replica, nil); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM replicas WHERE id = $1", replica)
		return wrapErr("drop replica "+replica, err)
	})
}
