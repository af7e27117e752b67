package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// lockCloseTimeout bounds saying goodbye on a lost session.
const lockCloseTimeout = 5 * time.Second

// Run watches the lock until ctx is done, then returns nil. It makes a
// round trip on the lock's session every CheckInterval and notices at once
// a session the server ends. When the session is lost, the DB's calls
// fail with ErrLockLost, Run calls changed(false, cause) and takes the
// lock again on a new session, retrying with backoff (and logging at most
// once a minute); then the DB serves again and Run calls changed(true,
// nil). If another manager took the lock in between (the record's epoch
// moved), Run returns ErrLockStale, and the DB's calls fail with it until
// Close: this manager's memory of tasks may be out of date.
//
// changed is called from Run's goroutine. Run must not run twice at once.
func (l *Lock) Run(ctx context.Context, changed func(held bool, cause error)) error {
	for {
		cause := l.watch(ctx)
		if cause == nil {
			return nil
		}
		lost := ErrLockLost
		l.db.fence.Store(&lost)
		l.log.Warn().Err(cause).Str("database", l.database).Str("schema", l.schema).
			Msg("lost the manager lock on the database: not serving until it is taken again")
		changed(false, cause)
		if err := l.reacquire(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.db.fence.Store(&err)
			l.log.Error().Err(err).Msg("took the manager lock again, but another manager held it meanwhile: not serving")
			return err
		}
		l.db.fence.Store(nil)
		l.log.Info().Str("database", l.database).Str("schema", l.schema).Msg("took the manager lock again: serving")
		changed(true, nil)
	}
}

// watch returns why the lock's session was lost, or nil once ctx is done.
func (l *Lock) watch(ctx context.Context) error {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn == nil {
		return errors.New("the lock's session is closed")
	}
	for {
		// Wait on the socket: a session the server ends (FATAL, EOF)
		// returns at once. The session LISTENs to nothing, so a quiet
		// interval ends in a timeout, and then a round trip.
		wctx, cancel := context.WithTimeout(ctx, l.opts.CheckInterval)
		err := conn.PgConn().WaitForNotification(wctx)
		quiet := wctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			continue
		case !quiet:
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, lockPingTimeout)
		err = conn.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// reacquire closes the lost session and takes the lock again, retrying
// with backoff until it succeeds, finds it stale, or ctx is done.
func (l *Lock) reacquire(ctx context.Context) error {
	l.mu.Lock()
	if l.conn != nil {
		cctx, cancel := context.WithTimeout(context.Background(), lockCloseTimeout)
		l.conn.Close(cctx)
		cancel()
		l.conn = nil
	}
	l.mu.Unlock()

	wait := lockBackoffMin
	var logged time.Time
	for attempt := 1; ; attempt++ {
		err := l.takeAgain(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil, errors.Is(err, ErrLockStale):
			return err
		}
		if time.Since(logged) >= lockLogEvery {
			l.log.Warn().Err(err).Int("attempt", attempt).Msg("cannot take the manager lock again yet; retrying")
			logged = time.Now()
		}
		if err := sleep(ctx, jitter(wait)); err != nil {
			return err
		}
		wait = min(2*wait, lockBackoffMax)
	}
}

// takeAgain makes one attempt at the lock on a new session. Taken, it
// moves the record's epoch on from this manager's own, and fails with
// ErrLockStale (keeping the lock until Close) if another manager moved it.
func (l *Lock) takeAgain(ctx context.Context) error {
	if l.db.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.db.callTimeout)
		defer cancel()
	}
	conn, err := l.connect(ctx)
	if err != nil {
		return l.wrap(err)
	}
	ok, err := l.try(ctx, conn, false)
	if err == nil && !ok {
		err = l.refusal(ctx, conn)
	}
	if err == nil && !l.shared {
		err = l.advance(ctx, conn)
	}
	if err != nil && !errors.Is(err, ErrLockStale) {
		conn.Close(context.Background())
		return l.wrap(err)
	}
	l.mu.Lock()
	l.conn = conn
	l.mu.Unlock()
	return err
}

// advance moves the record's epoch from this manager's to the next, on
// conn, which holds the lock. An attempt whose reply was lost may have
// committed: the record then holds that attempt's owner and time, which
// count as this manager's.
func (l *Lock) advance(ctx context.Context, conn *pgx.Conn) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	tried := l.tried
	l.tried = now
	var epoch int64
	err := conn.QueryRow(ctx, `UPDATE manager_lock SET epoch = $1::bigint + 1, owner = $2, acquired_at = $3
		WHERE epoch = $1 OR (epoch = $1::bigint + 1 AND owner = $2 AND acquired_at = $4)
		RETURNING epoch`, l.epoch, l.opts.Owner, now, nullTime(tried)).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		var (
			owner string
			at    *time.Time
		)
		if err := conn.QueryRow(ctx, "SELECT epoch, owner, acquired_at FROM manager_lock").Scan(&epoch, &owner, &at); err != nil {
			return fmt.Errorf("%w (reading who: %v); restart this manager", ErrLockStale, err)
		}
		return fmt.Errorf("%w: %q took it at %s (acquisition %d; this manager's was %d); its tasks in memory may be out of date: restart it",
			ErrLockStale, owner, fromNull(at).Format(time.RFC3339), epoch, l.epoch)
	}
	if err != nil {
		return fmt.Errorf("record the lock: %w", err)
	}
	l.epoch, l.tried = epoch, time.Time{}
	return nil
}
