package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The manager lock keeps a second manager off a database and schema: the
// store is safe for several processes, a manager's dispatcher is not (its
// queue and its delegates' streams are in its memory). It is a session
// advisory lock, held by a connection of its own (not one of the pool's:
// pooled sessions come and go), keyed by the database and schema
// (LockKey), and taken by the manager, not by Open: tests and tools open
// several stores on one schema.
//
// Its record, the table manager_lock (one row), counts acquisitions
// (epoch) and names the last owner. A manager that lost its session takes
// the lock again only if the epoch is still its own: otherwise another
// manager held the lock meanwhile, may have run this one's tasks, and this
// one's memory is stale (ErrLockStale).

var _ store.InstanceLocker = (*DB)(nil)

// Defaults for LockOptions fields left zero. See the fields for why.
const (
	DefaultLockWait  = 5 * time.Second
	DefaultLockCheck = time.Second
)

const (
	// lockPoll is how often Lock tries again while another session holds
	// the lock.
	lockPoll = 100 * time.Millisecond
	// lockPingTimeout bounds the round trip that checks the lock's
	// session; a server that does not answer in time counts as lost.
	lockPingTimeout = 10 * time.Second
	// lockBackoffMin and lockBackoffMax bound the waits between Run's
	// attempts to take a lost lock again (exponential, with jitter).
	lockBackoffMin = 100 * time.Millisecond
	lockBackoffMax = 5 * time.Second
	// lockLogEvery: Run logs a failing attempt at most this often, so an
	// outage of any length costs a few lines.
	lockLogEvery = time.Minute
	// appNameMax: PostgreSQL keeps 63 bytes of an application_name.
	appNameMax = 63
)

// lockSessionSetup runs on the lock's session when it connects: commits
// durable as the pool's are; the server probes the manager's host so that
// a vanished one releases the lock in about 25 s rather than the kernel's
// two hours (TCP only; ignored over a Unix socket); and no
// idle_session_timeout (PostgreSQL 14+) ends the session between checks.
const lockSessionSetup = durableCommit + `;
SELECT set_config('tcp_keepalives_idle', '10', false),
	set_config('tcp_keepalives_interval', '5', false),
	set_config('tcp_keepalives_count', '3', false);
SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'`

// Errors of the manager lock. Compare with errors.Is.
var (
	// ErrLocked: another session holds the lock; Lock returns it as a
	// *LockedError that names the holder.
	ErrLocked = errors.New("postgres: the database is in use by another manager")
	// ErrLockLost is what every call of the DB returns while the lock
	// taken from it is lost, until Run takes it again.
	// It matches store.ErrUnavailable: a transient failure.
	ErrLockLost = store.Unavailable(errors.New("postgres: this manager lost its lock on the database; it serves again once it has taken the lock again"))
	// ErrLockStale: the lock was lost and another manager took it
	// meanwhile, so this manager's memory may be stale. Run returns it
	// and the DB's calls fail with it from then on.
	ErrLockStale = errors.New("postgres: another manager took the database lock while this one had lost it")
)

// LockOptions configures DB.Lock.
type LockOptions struct {
	// Owner describes the process taking the lock ("smd manager HOST pid
	// PID"): the session's application_name (63 bytes of it) and the
	// record's owner, which a refused manager's error shows.
	Owner string
	// Wait is how long Lock waits for a holder to let go before it
	// refuses: a killed manager's session ends once the server notices,
	// which takes a moment even on one host. Zero means
	// DefaultLockWait; negative, no wait.
	Wait time.Duration
	// CheckInterval is how often Run makes a round trip on the lock's
	// session. A session the server ends (restart, pg_terminate_backend)
	// is noticed at once; a silent network is noticed by this check.
	// Zero means DefaultLockCheck.
	CheckInterval time.Duration
	// Logger receives Run's lines (lost, taken again, still failing).
	Logger zerolog.Logger
	// Cluster, when set, takes the lock shared, as a replica of that
	// cluster (lock_cluster.go): replicas of one cluster hold it
	// together; a single manager, or a replica of another cluster, is
	// refused while they do.
	Cluster string
}

// Holder is what PostgreSQL tells of the session holding the lock. Fields
// PostgreSQL does not show (another role's session without
// pg_read_all_stats, a Unix socket) are zero.
type Holder struct {
	PID             uint32 // the server process of the session (pg_terminate_backend)
	ClientAddr      string // the client's IP address
	ClientHostname  string // with log_hostname on only
	ClientPort      int32
	ApplicationName string // a manager's Owner
	BackendStart    time.Time
	// Shared: the session holds the lock shared (a cluster's replica),
	// not exclusively (a single manager).
	Shared bool
	// Owner and AcquiredAt are the lock's record: who took it last.
	Owner      string
	AcquiredAt time.Time
}

// LockedError is Lock's error when other sessions hold the lock.
type LockedError struct {
	Database, Schema string
	// Holder is nil when the holder let go before it could be named.
	Holder *Holder
	// More are the other holders, when replicas of a cluster hold the
	// lock together.
	More []Holder
	// Cluster is the cluster the lock's record names, when replicas
	// hold it (Holder.Shared).
	Cluster string
}

func (e *LockedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "postgres: database %q, schema %q is in use by ", e.Database, e.Schema)
	h := e.Holder
	switch {
	case h == nil:
		b.WriteString("another manager: a session that let go of the lock before it could be named; try again")
		return b.String()
	case h.Shared:
		fmt.Fprintf(&b, "the replicas of cluster %q: ", e.Cluster)
	default:
		b.WriteString("another manager: ")
	}
	writeHolder(&b, h)
	pids := []string{fmt.Sprintf("SELECT pg_terminate_backend(%d)", h.PID)}
	for i := range e.More {
		b.WriteString("; ")
		writeHolder(&b, &e.More[i])
		pids = append(pids, fmt.Sprintf("SELECT pg_terminate_backend(%d)", e.More[i].PID))
	}
	if h.Shared {
		fmt.Fprintf(&b, ". Replicas of one cluster may share a database and schema; a single manager, or a replica of another cluster, "+
			"may not: stop them, run this one as a replica of that cluster (cluster.name: %q), or give it a database or schema of its own "+
			"(search_path in the DSN). If they are gone, the server ends their sessions once it notices; to end them now: %s",
			e.Cluster, strings.Join(pids, "; "))
		return b.String()
	}
	if h.Owner != "" && h.Owner != h.ApplicationName {
		fmt.Fprintf(&b, "; the manager lock was last taken by %q at %s", h.Owner, h.AcquiredAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, ". One manager per database and schema: stop that one, or give this one a database or schema of its own "+
		"(search_path in the DSN). If that manager is gone, the server ends its session once it notices; to end it now: %s", pids[0])
	return b.String()
}

// writeHolder describes h: its application_name, backend pid and client.
func writeHolder(b *strings.Builder, h *Holder) {
	switch {
	case h.ApplicationName != "":
		fmt.Fprintf(b, "%q", h.ApplicationName)
	case h.Owner != "" && !h.Shared:
		fmt.Fprintf(b, "%q", h.Owner)
	default:
		b.WriteString("a session without an application_name")
	}
	fmt.Fprintf(b, " (PostgreSQL backend pid %d", h.PID)
	switch {
	case h.ClientHostname != "":
		fmt.Fprintf(b, ", client %s %s:%d", h.ClientHostname, h.ClientAddr, h.ClientPort)
	case h.ClientAddr != "":
		fmt.Fprintf(b, ", client %s:%d", h.ClientAddr, h.ClientPort)
	}
	if !h.BackendStart.IsZero() {
		fmt.Fprintf(b, ", connected at %s", h.BackendStart.UTC().Format(time.RFC3339))
	}
	b.WriteString(")")
}

// Unwrap returns ErrLocked.
func (e *LockedError) Unwrap() error { return ErrLocked }

// LockKey is the advisory lock key of a database and schema: the first 8
// bytes of a SHA-256 of both. (Advisory locks are per database already;
// the name is in the key so that the key alone says what it guards.)
func LockKey(database, schema string) int64 {
	sum := sha256.Sum256([]byte("smd manager lock\x00" + database + "\x00" + schema))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// Lock is a held manager lock. Take it with DB.Lock, watch it with Run,
// release it with Close.
type Lock struct {
	db       *DB
	cfg      *pgx.ConnConfig
	opts     LockOptions
	log      zerolog.Logger
	key      int64
	database string
	schema   string

	// epoch is the record's epoch when this manager last took the lock;
	// tried is the acquired_at of the last attempt to take it again
	// (zero if none), whose commit may have been lost with its reply.
	// Only Lock and then Run use them.
	epoch int64
	tried time.Time

	// shared: the lock is taken shared, for opts.Cluster.
	shared bool

	// mu guards conn: the lock's session, nil once closed.
	mu   sync.Mutex
	conn *pgx.Conn
}

// LockInstance is Lock with the default options and owner; it makes DB a
// store.InstanceLocker.
func (db *DB) LockInstance(ctx context.Context, owner string) (store.InstanceLock, error) {
	l, err := db.Lock(ctx, LockOptions{Owner: owner, Logger: db.log})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Lock takes the manager lock of the DB's database and schema on a
// session of its own. When another session holds it, Lock tries again
// for opts.Wait, then returns a *LockedError naming the holder. While the
// returned lock is lost (see Run), the DB's calls fail with ErrLockLost.
func (db *DB) Lock(ctx context.Context, opts LockOptions) (*Lock, error) {
	if db.life.Closed() {
		return nil, store.ErrClosed
	}
	if opts.Wait == 0 {
		opts.Wait = DefaultLockWait
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultLockCheck
	}
	if _, ok := ctx.Deadline(); !ok && db.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(opts.Wait, 0)+db.callTimeout)
		defer cancel()
	}
	cfg := db.connCfg.Copy()
	cfg.RuntimeParams["application_name"] = truncateUTF8(opts.Owner, appNameMax)
	l := &Lock{db: db, cfg: cfg, opts: opts, log: opts.Logger, shared: opts.Cluster != ""}
	conn, err := l.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: lock %s: %w", describeConn(cfg), err)
	}
	var schema *string
	if err := conn.QueryRow(ctx, "SELECT current_database(), current_schema()").Scan(&l.database, &schema); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("postgres: lock %s: %w", describeConn(cfg), err)
	}
	if schema == nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("postgres: lock %s: the search_path names no existing schema: %w", describeConn(cfg), errInvalid)
	}
	l.schema = *schema
	l.key = LockKey(l.database, l.schema)

	deadline := time.Now().Add(opts.Wait)
	for {
		ok, err := l.try(ctx, conn, true)
		if err == nil && ok {
			break
		}
		if err == nil && !time.Now().Before(deadline) {
			err = l.refusal(ctx, conn)
		}
		if err == nil {
			err = sleep(ctx, lockPoll)
		}
		if err != nil {
			conn.Close(context.Background())
			return nil, l.wrap(err)
		}
	}
	l.conn = conn
	return l, nil
}

// try makes one attempt at the lock on conn: exclusive, recorded as a
// new acquisition; or shared, for a cluster (takeShared). first is false
// for Run's attempts to take it again, which do not record (see
// takeAgain). It reports false while others hold it.
func (l *Lock) try(ctx context.Context, conn *pgx.Conn, first bool) (bool, error) {
	if l.shared {
		return l.takeShared(ctx, conn, first)
	}
	ok, err := tryLock(ctx, conn, l.key)
	if err != nil || !ok || !first {
		return ok, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	if err := conn.QueryRow(ctx, `UPDATE manager_lock SET epoch = epoch + 1, owner = $1, acquired_at = $2, cluster = '' RETURNING epoch`,
		l.opts.Owner, now).Scan(&l.epoch); err != nil {
		return false, fmt.Errorf("record the lock: %w", err)
	}
	return true, nil
}

// refusal is the *LockedError naming the sessions that hold the lock
// against this one.
func (l *Lock) refusal(ctx context.Context, conn *pgx.Conn) error {
	hs, cluster, err := l.holders(ctx, conn)
	e := &LockedError{Database: l.database, Schema: l.schema, Cluster: cluster}
	if len(hs) > 0 {
		e.Holder, e.More = &hs[0], hs[1:]
	}
	if err != nil {
		return fmt.Errorf("%w (and naming the holder failed: %v)", e, err)
	}
	return e
}

// wrap gives err its context, unless it is a LockedError, which has it.
func (l *Lock) wrap(err error) error {
	if errors.Is(err, ErrLocked) || errors.Is(err, ErrLockStale) {
		return err
	}
	return fmt.Errorf("postgres: lock database %q, schema %q: %w", l.database, l.schema, err)
}

// connect opens a session for the lock.
func (l *Lock) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, lockSessionSetup); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// tryLock takes the lock on conn if it is free.
func tryLock(ctx context.Context, conn *pgx.Conn, key int64) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok)
	return ok, err
}

// holders names the sessions holding the lock but this one's, from
// pg_locks and pg_stat_activity (a single manager's, or a cluster's
// replicas', oldest first), and the lock's record: who took it last, and
// for which cluster. A bigint advisory key shows in pg_locks as classid
// (high half), objid (low half) and objsubid 1.
func (l *Lock) holders(ctx context.Context, conn *pgx.Conn) ([]Holder, string, error) {
	var (
		owner, cluster string
		at             *time.Time
	)
	if err := conn.QueryRow(ctx, "SELECT owner, acquired_at, cluster FROM manager_lock").Scan(&owner, &at, &cluster); err != nil &&
		!errors.Is(err, pgx.ErrNoRows) {
		return nil, "", err
	}
	rows, err := conn.Query(ctx, `
SELECT l.pid, l.mode = 'ShareLock', coalesce(host(a.client_addr), ''), coalesce(a.client_hostname, ''), coalesce(a.client_port, 0),
	coalesce(a.application_name, ''), a.backend_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid::bigint = $1 AND l.objid::bigint = $2
ORDER BY a.backend_start, l.pid`, int64(uint64(l.key)>>32), int64(uint32(l.key)))
	if err != nil {
		return nil, cluster, err
	}
	var (
		out   []Holder
		h     Holder
		pid   int64
		start *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&pid, &h.Shared, &h.ClientAddr, &h.ClientHostname, &h.ClientPort, &h.ApplicationName, &start}, func() error {
		h.PID, h.BackendStart = uint32(pid), fromNull(start)
		h.Owner, h.AcquiredAt = owner, fromNull(at)
		out = append(out, h)
		return nil
	})
	return out, cluster, err
}

// Close releases the lock and closes its session. Call it after Run has
// returned. It is idempotent.
func (l *Lock) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	// Unlock first: ending the session releases the lock too, but only
	// once the server has read the goodbye. A session already lost holds
	// nothing, so the unlock's error does not matter.
	unlock := "SELECT pg_advisory_unlock($1)"
	if l.shared {
		unlock = "SELECT pg_advisory_unlock_shared($1)"
	}
	_, _ = l.conn.Exec(ctx, unlock, l.key)
	err := l.conn.Close(ctx)
	l.conn = nil
	if err != nil {
		return l.wrap(fmt.Errorf("release: %w", err))
	}
	return nil
}

// truncateUTF8 is s cut to at most n bytes, on a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sleep waits d, or returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// jitter is d give or take a fifth.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}
