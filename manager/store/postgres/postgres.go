// Package postgres is the store.Store in a PostgreSQL database, for
// deployments that already run PostgreSQL and want the manager's state
// there rather than in a local bolt file. It talks to the server through
// jackc/pgx (pgxpool).
//
// # Layout
//
// Open creates the tables if needed and migrates older ones (schema.go),
// recording the layout's version in the table schema_version; a migration
// runs under an advisory lock, so that managers starting together do it
// once. The tables are:
//
//   - tasks: one row per task. Partial indexes serve the unfinished tasks
//     by creation (ListUnfinished), the final tasks by UpdatedAt (Prune)
//     and those an older smd completed with their whole payload
//     (payload_scrubbed false, ScrubFinished), and hold a request (owner
//     and id) to one task (CreateTask's store.DuplicateRequestError).
//   - connectors (a partial unique index holds the one-default-per-scope
//     rule), credentials, signing_keys, delegate_tags: the store.Catalog.
//   - replicas, delegates, and the tasks' owner, lease_expiry and timer
//     lengths: the store.Cluster of a cluster's replicas (cluster.go);
//     manager_lock: the manager lock's record (lock.go).
//
// Ids, names and scopes are text in the "C" collation, so that lists come
// out in byte order, as Go compares strings. Text columns cannot hold NUL
// bytes or invalid UTF-8: a call with such an id fails (the manager's ids
// are UUIDs and validated names).
//
// # Durability
//
// Every mutation is one statement, or one transaction, committed before
// the call returns, with synchronous_commit on (Open turns it back on for
// its sessions where the server's default is off): what a call
// acknowledged survives a crash of the manager, and of the server as far
// as the server's own settings (fsync) promise.
//
// # Concurrency
//
// Transitions are single conditional UPDATEs (UPDATE ... WHERE state =
// 'queued'), so of racing claims, completions and requeues of one task
// exactly one takes effect, whichever manager process or connection sends
// it. Each waits for a concurrent change of the same row to commit and
// then re-checks its condition (PostgreSQL's READ COMMITTED): a claim by
// id does not use SKIP LOCKED, which would report a conflict for a row
// whose lock holder may yet roll back (see Claim).
//
// # Times
//
// PostgreSQL keeps microseconds: times come back truncated to the
// microsecond, in UTC. A zero time is stored as NULL and comes back zero.
// Times the store sets itself are read from the manager's clock, like the
// deadlines the manager computes; the cluster's times (lease expiries,
// heartbeats, restarted timers, the sweep's comparisons) from the
// server's now(), so that replicas never compare their own clocks.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
)

var _ store.Store = (*DB)(nil)

// Defaults for Options fields left zero. See the fields for why.
const (
	DefaultPruneInterval = 10 * time.Minute
	DefaultCallTimeout   = 30 * time.Second
)

// errInvalid is wrapped by errors for arguments no store could accept (an
// empty id or lease id, a non-final Final, a scope that breaks its rules).
// The store package has no sentinel for these: they are programming
// errors, not conditions to handle.
var errInvalid = errors.New("invalid argument")

// Options configures Open. The zero value is usable.
type Options struct {
	// Schema, when set, is the PostgreSQL schema that holds the store's
	// tables: Open creates it if needed and every connection uses it
	// (search_path). It must be a plain lower-case identifier. Empty:
	// the connection's default (public, or the DSN's search_path).
	Schema string

	// KeepFinished, when positive, makes the DB delete final tasks that
	// finished (UpdatedAt) more than KeepFinished ago, every PruneInterval,
	// from a goroutine that Close stops. Zero keeps history forever;
	// callers may still call Prune themselves.
	KeepFinished time.Duration

	// PruneInterval is how often KeepFinished is applied. Zero means
	// DefaultPruneInterval.
	PruneInterval time.Duration

	// CallTimeout bounds a call whose context has no deadline, so that an
	// unreachable server fails the call rather than hanging it (the
	// dispatcher calls the store with context.Background()). Zero means
	// DefaultCallTimeout; negative means no bound.
	CallTimeout time.Duration

	// Logger receives the errors of the background prune. The zero value
	// logs nothing.
	Logger zerolog.Logger

	// Replica, when set, opens the store for that replica of a cluster
	// (store.Cluster): Claim and Requeue are fenced by the task's owner
	// as well, and Claim stores the lease's expiry, LeaseDuration from
	// the store's clock. Empty: a single manager's store.
	Replica string
	// LeaseDuration is the lease a Claim stores for Replica.
	LeaseDuration time.Duration
}

// DB is a store.Store in a PostgreSQL database. Create it with Open; it is
// safe for concurrent use.
type DB struct {
	pool        *pgxpool.Pool
	log         zerolog.Logger
	callTimeout time.Duration

	// life gates every call (so Close waits for calls in flight and no
	// call ever reaches a closed pool) and runs the prune loop.
	life store.Lifetime

	// connCfg is what a session of the pool connects with, for the
	// manager lock's session of its own (lock.go) and the listener's
	// (cluster.go).
	connCfg *pgx.ConnConfig
	// channel is the NOTIFY channel of this database and schema
	// (cluster.go).
	channel string
	// replica and leaseDuration are Options.Replica and
	// Options.LeaseDuration.
	replica       string
	leaseDuration time.Duration

	// fence, when set, is the error every call fails with: the manager
	// lock taken from this DB is lost (lock.go).
	fence atomic.Pointer[error]

	// pruneChunk is how many tasks one prune statement deletes at most.
	pruneChunk int
	// scrubChunk is how many tasks one ScrubFinished round rewrites.
	scrubChunk int
}

// durableCommit turns synchronous_commit back on for a session where the
// server, role or DSN turned it off; stronger settings are kept.
const durableCommit = `SELECT set_config('synchronous_commit', 'on', false)
	WHERE current_setting('synchronous_commit') = 'off'`

// schemaName is what Options.Schema may be: an identifier PostgreSQL
// takes unquoted, so that it means the same in search_path and in SQL.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects to the database dsn names (a postgres:// URL or key=value
// pairs, as libpq takes them; pgxpool's pool_* parameters are honoured),
// creates or migrates the store's tables, and returns the store. ctx bounds
// the connection and the migration only.
//
// The DSN may carry a password: no error Open returns quotes the DSN.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	if opts.Schema != "" && !schemaName.MatchString(opts.Schema) {
		return nil, fmt.Errorf("postgres: open: schema %q must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes): %w",
			opts.Schema, errInvalid)
	}
	if opts.Replica != "" && opts.LeaseDuration <= 0 {
		return nil, fmt.Errorf("postgres: open: replica %q needs a positive lease duration: %w", opts.Replica, errInvalid)
	}
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if opts.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	}
	// A commit must be durable when the call returns: a server (or role,
	// or DSN) that turned synchronous_commit off is overruled for the
	// store's sessions. Stronger settings (remote_apply, ...) are kept.
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, durableCommit)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}
	if err := migrate(ctx, pool, opts.Schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", describe(cfg), err)
	}

	db := &DB{
		pool:        pool,
		connCfg:     cfg.ConnConfig.Copy(),
		log:         opts.Logger.With().Str("component", "store.postgres").Logger(),
		callTimeout: opts.CallTimeout,
		pruneChunk:  defaultPruneChunk,
		scrubChunk:  defaultScrubChunk,
		channel:     notifyChannel(cfg.ConnConfig.Database, opts.Schema),
		replica:     opts.Replica,

		leaseDuration: opts.LeaseDuration,
	}
	if db.callTimeout == 0 {
		db.callTimeout = DefaultCallTimeout
	}
	interval := opts.PruneInterval
	if interval <= 0 {
		interval = DefaultPruneInterval
	}
	db.life.StartPrune(db.log, opts.KeepFinished, interval, db.Prune)
	return db, nil
}

// ParseDSN parses a connection string as Open does. Its error never quotes
// dsn, which may hold a password: pgx's own parse errors redact passwords
// only on a best-effort basis, so their detail is left out.
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	if dsn == "" {
		return nil, fmt.Errorf("postgres: empty connection string: %w", errInvalid)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: the connection string is not valid (a postgres://user@host:port/database URL or libpq key=value pairs); "+
			"the parser's detail is withheld because it may quote the password: %w", errInvalid)
	}
	return cfg, nil
}

// Describe names the server and database dsn points at, without its
// password, for logs: "user@host:port/database". It returns "" for a dsn
// ParseDSN rejects.
func Describe(dsn string) string {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return ""
	}
	return describe(cfg)
}

func describe(cfg *pgxpool.Config) string { return describeConn(cfg.ConnConfig) }

// describeConn is describe of one connection's config.
func describeConn(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// Close stops the prune loop, waits for calls in flight, and closes the
// pool. Calls after Close, Close included, return store.ErrClosed.
func (db *DB) Close() error {
	return db.life.Close(func() error {
		db.pool.Close()
		return nil
	})
}

// enter starts a call: it returns ErrClosed after Close, ctx's error if
// it is done, or the fence (ErrLockLost, ErrLockStale) while the manager
// lock is not held; otherwise the context to run the call in (bounded by
// CallTimeout when ctx has no deadline), and the caller must call done
// when finished.
func (db *DB) enter(ctx context.Context) (context.Context, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := db.life.Enter(); err != nil {
		return nil, nil, err
	}
	if fence := db.fence.Load(); fence != nil {
		db.life.Exit()
		return nil, nil, *fence
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok && db.callTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, db.callTimeout)
	}
	return ctx, func() { cancel(); db.life.Exit() }, nil
}

// isStoreErr reports whether err is one of the store sentinels, already
// wrapped with its context.
func isStoreErr(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) ||
		errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, store.ErrDefaultTaken)
}

// wrapErr gives err its context, "postgres: <what>: ...", unless it is a
// store sentinel that already has it, and marks a transient failure
// (classify).
func wrapErr(what string, err error) error {
	if err == nil || isStoreErr(err) {
		return err
	}
	return classify(fmt.Errorf("postgres: %s: %w", what, err))
}

// classify marks err with store.ErrUnavailable when it is a failure of
// the database's availability rather than of the call: the server
// unreachable or restarting, the connection lost, the call timeout
// reached, a serialization failure or deadlock (the transaction may run
// again). Errors store.IsUnavailable already recognizes (network errors,
// timeouts, ErrLockLost) need no mark; they get one all the same.
func classify(err error) error {
	if err == nil || isStoreErr(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // admin/crash shutdown, cannot connect now
			pgErr.Code == "53300",                        // too many connections
			pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return store.Unavailable(err)
		}
		return err
	}
	if store.IsUnavailable(err) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return store.Unavailable(err)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return store.Unavailable(err)
	}
	return err
}

// uniqueViolation returns the name of the unique constraint err violates,
// or "" if err is not a unique violation.
func uniqueViolation(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return pgErr.ConstraintName
	}
	return ""
}

// checkScope rejects a scope that breaks store.Scope's rules (Org requires
// Account, Project requires Org) and an empty id or name.
func checkScope(what string, s store.Scope, name string) error {
	switch {
	case s.Org != "" && s.Account == "":
		return fmt.Errorf("postgres: %s: scope %q has an org but no account: %w", what, s.String(), errInvalid)
	case s.Project != "" && s.Org == "":
		return fmt.Errorf("postgres: %s: scope %q has a project but no org: %w", what, s.String(), errInvalid)
	case name == "":
		return fmt.Errorf("postgres: %s: empty id: %w", what, errInvalid)
	}
	return nil
}

// nullTime is t for a timestamptz parameter: NULL for the zero time.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// fromNull is the time a nullable timestamptz column held: zero for NULL,
// in UTC otherwise.
func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// orEmpty is b, or an empty slice for nil: the bytea columns are NOT NULL,
// and pgx sends a nil slice as NULL.
func orEmpty[T any](b []T) []T {
	if b == nil {
		return []T{}
	}
	return b
}
