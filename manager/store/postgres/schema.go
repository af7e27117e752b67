package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the store's layout, one step per version: migrations[i]
// takes a database from version i to version i+1. A step, once released,
// is never edited: a change is a new step appended here.
var migrations = []string{
	// 1: tasks and the catalog.
	`
CREATE TABLE tasks (
	id             text COLLATE "C" PRIMARY KEY,
	kind           text NOT NULL,
	selectors      text[] NOT NULL,
	scope_account  text COLLATE "C" NOT NULL,
	scope_org      text COLLATE "C" NOT NULL,
	scope_project  text COLLATE "C" NOT NULL,
	payload        bytea NOT NULL,
	request_owner  text COLLATE "C" NOT NULL,
	request_id     text COLLATE "C" NOT NULL,
	request_hash   bytea NOT NULL,
	state          text NOT NULL CHECK (state IN ('queued', 'leased', 'succeeded', 'failed')),
	attempt        integer NOT NULL,
	max_attempts   integer NOT NULL,
	lease_id       text NOT NULL,
	delegate       text NOT NULL,
	code           text NOT NULL,
	outcome        bytea NOT NULL,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	deadline       timestamptz,
	queue_deadline timestamptz
);
-- ListTasks, newest first.
CREATE INDEX tasks_created_idx ON tasks (created_at, id);
-- ListUnfinished: what a restarted manager recovers, without walking the
-- finished history.
CREATE INDEX tasks_unfinished_idx ON tasks (created_at, id) WHERE state IN ('queued', 'leased');
-- A request (owner and id) names one task while it is stored; tasks
-- without a request id are not indexed.
CREATE UNIQUE INDEX tasks_request_idx ON tasks (request_owner, request_id) WHERE request_id <> '';
-- Prune.
CREATE INDEX tasks_finished_idx ON tasks (updated_at) WHERE state IN ('succeeded', 'failed');

CREATE TABLE connectors (
	scope_account text COLLATE "C" NOT NULL,
	scope_org     text COLLATE "C" NOT NULL,
	scope_project text COLLATE "C" NOT NULL,
	id            text COLLATE "C" NOT NULL,
	is_default    boolean NOT NULL,
	data          bytea NOT NULL,
	created_at    timestamptz NOT NULL,
	updated_at    timestamptz NOT NULL,
	PRIMARY KEY (scope_account, scope_org, scope_project, id)
);
-- One default connector per scope.
CREATE UNIQUE INDEX connectors_one_default ON connectors (scope_account, scope_org, scope_project) WHERE is_default;

CREATE TABLE credentials (
	scope_account text COLLATE "C" NOT NULL,
	scope_org     text COLLATE "C" NOT NULL,
	scope_project text COLLATE "C" NOT NULL,
	name          text COLLATE "C" NOT NULL,
	sealed        bytea NOT NULL,
	created_at    timestamptz NOT NULL,
	updated_at    timestamptz NOT NULL,
	PRIMARY KEY (scope_account, scope_org, scope_project, name)
);

CREATE TABLE signing_keys (
	id         text COLLATE "C" PRIMARY KEY,
	private    bytea NOT NULL,
	public     bytea NOT NULL,
	created_at timestamptz NOT NULL,
	retired_at timestamptz,
	expires    timestamptz
);

CREATE TABLE delegate_tags (
	name text COLLATE "C" PRIMARY KEY,
	tags text[] NOT NULL
);
`,
	// 2: payload_scrubbed marks a final task whose payload Complete (or
	// ScrubFinished) replaced. Rows of version 1 get false: a final one
	// still holds the payload it was created with, secret values
	// included, until ScrubFinished rewrites it.
	`
ALTER TABLE tasks ADD COLUMN payload_scrubbed boolean NOT NULL DEFAULT false;
-- ScrubFinished: the final tasks an older smd completed.
CREATE INDEX tasks_unscrubbed_idx ON tasks (id) WHERE state IN ('succeeded', 'failed') AND NOT payload_scrubbed;
`,
	// 3: the manager lock's record (lock.go). One row: which manager took
	// the lock last, and how many times it was taken, so that a manager
	// that lost the lock and takes it again can tell whether another one
	// held it meanwhile.
	`
CREATE TABLE manager_lock (
	epoch       bigint NOT NULL,
	owner       text NOT NULL,
	acquired_at timestamptz
);
INSERT INTO manager_lock (epoch, owner) VALUES (0, '');
`,
	// 4: order_key names the secret a mutation changes (per-secret order);
	// tasks of version 3 get '' (not ordered).
	`
ALTER TABLE tasks ADD COLUMN order_key text COLLATE "C" NOT NULL DEFAULT '';
`,
	// 5: replicas of one cluster (store.Cluster, cluster.go): a task's
	// owner and its lease's expiry, the lengths of its deadlines (so
	// that they can start again: chain.go), the replicas' heartbeat
	// rows, the delegates connected anywhere in the cluster, and the
	// cluster holding the manager lock (lock.go). Tasks of version 4 are
	// unowned, with no stored expiry; their lengths are what their
	// deadlines leave after their creation.
	`
ALTER TABLE tasks ADD COLUMN owner text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN lease_expiry timestamptz;
ALTER TABLE tasks ADD COLUMN task_timeout interval;
ALTER TABLE tasks ADD COLUMN queue_timeout interval;
UPDATE tasks SET task_timeout = deadline - created_at, queue_timeout = queue_deadline - created_at
	WHERE state IN ('queued', 'leased');
ALTER TABLE manager_lock ADD COLUMN cluster text NOT NULL DEFAULT '';
CREATE INDEX tasks_pull_idx ON tasks (created_at, id) WHERE state = 'queued' AND owner = '';
CREATE INDEX tasks_lease_expiry_idx ON tasks (lease_expiry) WHERE state = 'leased';
CREATE INDEX tasks_order_idx ON tasks (order_key, created_at, id) WHERE order_key <> '' AND state IN ('queued', 'leased');
CREATE TABLE replicas (
	id         text COLLATE "C" PRIMARY KEY,
	cluster    text COLLATE "C" NOT NULL,
	advertise  text NOT NULL,
	host       text NOT NULL,
	pid        integer NOT NULL,
	started_at timestamptz NOT NULL,
	last_seen  timestamptz NOT NULL
);
CREATE TABLE delegates (
	name         text COLLATE "C" PRIMARY KEY,
	replica      text COLLATE "C" NOT NULL,
	instance_id  text NOT NULL,
	token_name   text NOT NULL,
	scope_account text COLLATE "C" NOT NULL,
	scope_org    text COLLATE "C" NOT NULL,
	scope_project text COLLATE "C" NOT NULL,
	tags         text[] NOT NULL,
	capacity     integer NOT NULL,
	running      integer NOT NULL,
	draining     boolean NOT NULL,
	version      text NOT NULL,
	hostname     text NOT NULL,
	connected_at timestamptz NOT NULL,
	updated_at   timestamptz NOT NULL
);
CREATE INDEX delegates_replica_idx ON delegates (replica);
`,
	// 6: a task's origin, the replica its caller waits on (the peer link
	// brings it a generated value there); '' for tasks of version 5.
	`
ALTER TABLE tasks ADD COLUMN origin text COLLATE "C" NOT NULL DEFAULT '';
`,
}

// schemaVersion is the layout version this package writes: Open migrates
// an older database to it and refuses a newer one.
var schemaVersion = len(migrations)

// migrateLock is the key of the advisory lock that serializes migrations
// across the processes sharing a database ("smd-mig" in ASCII). It is
// held for the migration transaction only.
const migrateLock int64 = 0x736d642d6d6967

// ErrSchemaTooNew: the database was migrated by a newer smd than this one.
var ErrSchemaTooNew = errors.New("postgres: the database's schema is newer than this smd")

// migrate creates schema (if not empty) and the tables, or brings older
// tables up to schemaVersion, in one transaction: a failed step leaves the
// database as it was. It is idempotent, and safe when several managers
// start at once.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLock); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if schema != "" {
			// The connection's search_path names the schema already; it
			// takes effect for the statements below once it exists.
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
				return fmt.Errorf("create schema %s: %w", schema, err)
			}
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, "SELECT version FROM schema_version").Scan(&version)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, "INSERT INTO schema_version (version) VALUES (0)"); err != nil {
				return fmt.Errorf("init schema_version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read schema_version: %w", err)
		}
		if version > schemaVersion {
			return fmt.Errorf("%w: version %d, this smd knows up to %d: run a newer smd", ErrSchemaTooNew, version, schemaVersion)
		}
		for v := version; v < schemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate schema from version %d to %d: %w", v, v+1, err)
			}
		}
		if version < schemaVersion {
			if _, err := tx.Exec(ctx, "UPDATE schema_version SET version = $1", schemaVersion); err != nil {
				return fmt.Errorf("record schema version %d: %w", schemaVersion, err)
			}
		}
		return nil
	})
}
