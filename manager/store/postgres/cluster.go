package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The cluster side of the store (store.Cluster): the replicas' heartbeat
// rows, the delegates connected anywhere, the shared queue's pulls,
// adoptions, renewals and expiries, and the notifications between
// replicas.
//
// Notifications are PostgreSQL's NOTIFY on one channel per database and
// schema (notifyChannel), sent in the transaction of the change they
// announce (so a replica never hears of a change that did not commit),
// and received by Listen on a connection of its own (LISTEN needs one
// session for its life; the pool's sessions come and go). A payload is
// one letter for the kind, then its argument: "q" (EventQueued), "f<id>"
// (EventFinal), "d<name>" (EventDelegate), "t" (EventTags).

var _ store.Cluster = (*DB)(nil)

// notifyChannel is the NOTIFY channel of database and schema: "smd_"
// and a digest of both, so that stores in other schemas of one database
// (tests, several clusters) do not hear each other, within the 63 bytes
// of an identifier.
func notifyChannel(database, schema string) string {
	sum := sha256.Sum256([]byte(database + "\x00" + schema))
	return "smd_" + hex.EncodeToString(sum[:8])
}

// encodeEvent is the NOTIFY payload of e.
func encodeEvent(e store.Event) (string, error) {
	switch e.Kind {
	case store.EventQueued:
		return "q", nil
	case store.EventFinal:
		return "f" + e.TaskID, nil
	case store.EventDelegate:
		return "d" + e.Name, nil
	case store.EventTags:
		return "t", nil
	}
	return "", fmt.Errorf("postgres: notify: event kind %d cannot be sent: %w", e.Kind, errInvalid)
}

// decodeEvent reverses encodeEvent; ok is false for a payload it does not
// know (a newer replica's).
func decodeEvent(payload string) (store.Event, bool) {
	if payload == "" {
		return store.Event{}, false
	}
	arg := payload[1:]
	switch payload[0] {
	case 'q':
		return store.Event{Kind: store.EventQueued}, true
	case 'f':
		return store.Event{Kind: store.EventFinal, TaskID: arg}, true
	case 'd':
		return store.Event{Kind: store.EventDelegate, Name: arg}, true
	case 't':
		return store.Event{Kind: store.EventTags}, true
	}
	return store.Event{}, false
}

// notifyTx sends e on db's channel as part of tx.
func (db *DB) notifyTx(ctx context.Context, tx pgx.Tx, e store.Event) error {
	payload, err := encodeEvent(e)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", db.channel, payload)
	return err
}

// Notify sends e to every replica listening on this database and schema.
func (db *DB) Notify(ctx context.Context, e store.Event) error {
	payload, err := encodeEvent(e)
	if err != nil {
		return err
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = db.pool.Exec(ctx, "SELECT pg_notify($1, $2)", db.channel, payload)
	return wrapErr("notify", err)
}

// Listen backoff bounds: after a lost connection it connects again after
// listenBackoffMin, doubling up to listenBackoffMax, with jitter.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// Listen calls fn with each event sent on this store's channel until ctx
// is done, from the calling goroutine. It holds a connection of its own;
// when that connection is lost it connects again (with backoff) and, once
// listening again, calls fn with EventResync, since notifications sent
// meanwhile are lost. The first connection's failure is returned; later
// ones are retried until ctx is done, and Listen returns nil.
func (db *DB) Listen(ctx context.Context, fn func(store.Event)) error {
	conn, err := db.listenConn(ctx)
	if err != nil {
		return err
	}
	backoff := listenBackoffMin
	for {
		err := db.receive(ctx, conn, fn)
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return nil
		}
		db.log.Warn().Err(err).Msg("cluster notifications lost; listening again")
		for {
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			backoff = min(2*backoff, listenBackoffMax)
			if conn, err = db.listenConn(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
		}
		backoff = listenBackoffMin
		fn(store.Event{Kind: store.EventResync})
	}
}

// listenConn opens the listener's connection and issues LISTEN.
func (db *DB) listenConn(ctx context.Context) (*pgx.Conn, error) {
	if err := db.life.Enter(); err != nil {
		return nil, err
	}
	defer db.life.Exit()
	cctx, cancel := context.WithTimeout(ctx, db.connectTimeout())
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, db.connCfg.Copy())
	if err != nil {
		return nil, wrapErr("listen", err)
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{db.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, wrapErr("listen", err)
	}
	return conn, nil
}

// connectTimeout bounds the listener's connect and LISTEN.
func (db *DB) connectTimeout() time.Duration {
	if db.callTimeout > 0 {
		return db.callTimeout
	}
	return DefaultCallTimeout
}

// receive delivers notifications from conn until ctx is done or the
// connection fails.
func (db *DB) receive(ctx context.Context, conn *pgx.Conn, fn func(store.Event)) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if e, ok := decodeEvent(n.Payload); ok {
			fn(e)
		}
	}
}

// Beat records r alive now (its row inserted or updated).
func (db *DB) Beat(ctx context.Context, r store.Replica) error {
	if r.ID == "" {
		return fmt.Errorf("postgres: beat: empty replica id: %w", errInvalid)
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = db.pool.Exec(ctx, `INSERT INTO replicas (id, cluster, advertise, host, pid, started_at, last_seen)
		VALUES ($1, $2, $3, $4, $5, now(), now())
		ON CONFLICT (id) DO UPDATE SET last_seen = now(), advertise = EXCLUDED.advertise`,
		r.ID, r.Cluster, r.Advertise, r.Host, r.PID)
	return wrapErr("beat", err)
}

// Replicas returns every replica row, with its Age by the store's clock.
func (db *DB) Replicas(ctx context.Context) ([]store.Replica, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `SELECT id, cluster, advertise, host, pid, started_at, last_seen,
		extract(epoch FROM now() - last_seen) FROM replicas ORDER BY started_at, id`)
	if err != nil {
		return nil, wrapErr("list replicas", err)
	}
	var out []store.Replica
	for rows.Next() {
		var (
			r   store.Replica
			age float64
		)
		if err := rows.Scan(&r.ID, &r.Cluster, &r.Advertise, &r.Host, &r.PID, &r.StartedAt, &r.LastSeen, &age); err != nil {
			rows.Close()
			return nil, wrapErr("list replicas", err)
		}
		r.StartedAt, r.LastSeen = r.StartedAt.UTC(), r.LastSeen.UTC()
		r.Age = time.Duration(age * float64(time.Second))
		out = append(out, r)
	}
	return out, wrapErr("list replicas", rows.Err())
}

// Leave deletes replica id's row.
func (db *DB) Leave(ctx context.Context, id string) error {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = db.pool.Exec(ctx, "DELETE FROM replicas WHERE id = $1", id)
	return wrapErr("leave", err)
}
