package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// managerOwner is how a manager process names itself on its lock's
// session (application_name, 63 bytes of it).
func managerOwner(t *testing.T, pid int) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("smd manager %s pid %d", host, pid)
}

// pgConn opens a session of the test's own on dsn.
func pgConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lockHolder is the server pid and application_name of the session holding
// the manager lock of database and schema ("" if none).
func lockHolder(t *testing.T, conn *pgx.Conn, database, schema string) (pid int32, app string) {
	t.Helper()
	key := uint64(postgres.LockKey(database, schema))
	err := conn.QueryRow(t.Context(), `SELECT l.pid, coalesce(a.application_name, '')
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
			AND l.classid::bigint = $1 AND l.objid::bigint = $2
			AND l.database = (SELECT oid FROM pg_database WHERE datname = $3)`,
		int64(key>>32), int64(uint32(key)), database).Scan(&pid, &app)
	if err == pgx.ErrNoRows {
		return 0, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid, app
}

// readyz is the status of the manager's GET /readyz, or 0 if it does not
// answer.
func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// withParam adds a query parameter to a postgres:// DSN.
func withParam(t *testing.T, dsn, key, value string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestIssue10SecondManagerOnPostgresRefused (Done 5): a second `smd
// manager` on the database a first one uses exits non-zero before it
// listens, with an error naming the first (its host and pid, PostgreSQL's
// backend pid, how to end a vanished one's session) and without the DSN's
// password; the first keeps its lock and serves. A manager on another
// schema of the same database starts.
func TestIssue10SecondManagerOnPostgresRefused(t *testing.T) {
	const pw = "planted-Pa55word-e2e-10lk"
	db, name := pgtest.Database(t)
	first := startManager(t, managerOpts{PostgresDSN: withPassword(db, pw)})
	owner := managerOwner(t, first.proc.pid())

	// The second: the first's config, with ports and a data dir of its own.
	var cfg map[string]any
	b, err := os.ReadFile(first.configPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	httpAddr := freeAddr(t)
	cfg["listen"], cfg["http_listen"], cfg["data_dir"] = freeAddr(t), httpAddr, filepath.Join(dir, "data")
	path := filepath.Join(dir, "manager.yaml")
	writeYAML(t, path, cfg)
	second := startProc(t, dir, "manager-second", first.env, "manager", "-c", path)
	if code := second.wait(t, 60*time.Second); code == 0 {
		t.Fatalf("second manager on one database exited 0, want non-zero:\n%s", tail(second.log(), 20))
	}
	log := second.log()
	for _, want := range []string{
		fmt.Sprintf("database %q, schema \"public\" is in use by another manager", name),
		fmt.Sprintf("%q", owner[:min(len(owner), 63)]),
		"PostgreSQL backend pid ", "client 127.0.0.1:", "pg_terminate_backend(",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("second manager's error does not say %q:\n%s", want, tail(log, 20))
		}
	}
	if strings.Contains(log, pw) {
		t.Error("second manager's output holds the DSN's password")
	}
	if strings.Contains(log, `"manager started"`) || readyz(httpAddr) != 0 {
		t.Error("the refused manager started listening")
	}

	conn := pgConn(t, db)
	if _, app := lockHolder(t, conn, name, "public"); app != owner[:min(len(owner), 63)] {
		t.Errorf("lock holder after the refusal = %q, want the first manager %q", app, owner)
	}
	if code := readyz(first.HTTPAddr); code != http.StatusOK {
		t.Errorf("first manager's /readyz after the refusal = %d, want 200", code)
	}
	if _, err := first.API().ListTasks(t.Context(), &delegatev1.ListTasksRequest{}); err != nil {
		t.Errorf("first manager's ListTasks after the refusal = %v, want nil", err)
	}

	pgtest.Exec(t, db, "CREATE SCHEMA other")
	other := startManager(t, managerOpts{PostgresDSN: withParam(t, db, "search_path", "other")})
	if _, app := lockHolder(t, conn, name, "other"); !strings.HasPrefix(managerOwner(t, other.proc.pid()), app) || app == "" {
		t.Errorf("lock holder of schema other = %q, want the manager started on it", app)
	}
}

// takeLockAway kills the manager's lock session while a session of the
// test's own waits for the lock, which thus gets it first; it returns that
// session, holding the lock.
func takeLockAway(t *testing.T, db, name string, admin *pgx.Conn) *pgx.Conn {
	t.Helper()
	thief := pgConn(t, db)
	pid, _ := lockHolder(t, admin, name, "public")
	if pid == 0 {
		t.Fatal("no session holds the manager lock")
	}
	got := make(chan error, 1)
	go func() {
		_, err := thief.Exec(context.Background(), "SELECT pg_advisory_lock($1)", postgres.LockKey(name, "public"))
		got <- err
	}()
	waitFor(t, 20*time.Second, "the test's session to wait for the lock", func() error {
		var n int
		err := admin.QueryRow(t.Context(), "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
			int32(thief.PgConn().PID())).Scan(&n)
		if err == nil && n == 0 {
			err = fmt.Errorf("not queued yet")
		}
		return err
	})
	if _, err := admin.Exec(t.Context(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the test's pg_advisory_lock = %v", err)
	}
	return thief
}

// TestIssue10ManagerLockLossPostgres: the manager's lock session is
// killed on the server while another session takes the lock. The manager
// says it is not ready (/readyz, gRPC health) and refuses work, storing
// nothing; once the other session lets go it takes the lock again and
// serves. Lost again, and this time the other session records itself as
// a manager that took the lock (as a second manager would): the manager
// exits non-zero, since its memory may be stale.
func TestIssue10ManagerLockLossPostgres(t *testing.T) {
	db, name := pgtest.Database(t)
	m := startManager(t, managerOpts{PostgresDSN: db})
	startAgent(t, m, "agent-1", agentOpts{Tags: []string{"pool"}})
	admin := pgConn(t, db)
	oldPID, _ := lockHolder(t, admin, name, "public")

	thief := takeLockAway(t, db, name, admin)
	waitFor(t, 20*time.Second, "/readyz 503 while the lock is lost", func() error {
		if code := readyz(m.HTTPAddr); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})
	hc, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if resp, err := healthpb.NewHealthClient(hc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil ||
		resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health while the lock is lost = %v, %v, want NOT_SERVING", resp.GetStatus(), err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	_, err = m.API().Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"pool"}, Async: true, Sleep: durationpb.New(0)})
	cancel()
	if err == nil {
		t.Error("Ping(async) while the lock is lost = nil, want an error")
	}
	var n int
	if err := admin.QueryRow(t.Context(), "SELECT count(*) FROM tasks").Scan(&n); err != nil || n != 0 {
		t.Errorf("tasks stored while the lock is lost = %d, %v, want 0", n, err)
	}

	if _, err := thief.Exec(t.Context(), "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "/readyz 200 once the lock is free", func() error {
		if code := readyz(m.HTTPAddr); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})
	owner := managerOwner(t, m.proc.pid())
	if pid, app := lockHolder(t, admin, name, "public"); pid == oldPID || app != owner[:min(len(owner), 63)] {
		t.Errorf("lock holder after the manager took it again = pid %d %q, want a new session (not %d) of %q", pid, app, oldPID, owner)
	}
	id := m.pingAsync(t, 0, "pool")
	if ti := m.waitFinal(t, 30*time.Second, []string{id})[id]; ti.GetState() != delegatev1.TaskState_SUCCEEDED {
		t.Errorf("ping after the manager took the lock again = %s (%v), want SUCCEEDED", ti.GetState(), ti.GetOutcome())
	}

	thief = takeLockAway(t, db, name, admin)
	const other = "smd manager elsewhere pid 4242"
	if _, err := thief.Exec(t.Context(), "UPDATE manager_lock SET epoch = epoch + 1, owner = $1, acquired_at = now()", other); err != nil {
		t.Fatal(err)
	}
	if _, err := thief.Exec(t.Context(), "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if code := m.proc.wait(t, 60*time.Second); code == 0 {
		t.Error("manager whose lock another manager held meanwhile exited 0, want non-zero")
	}
	log := m.proc.log()
	if !strings.Contains(log, "another manager took the database lock") || !strings.Contains(log, other) {
		t.Errorf("manager log does not say another manager (%q) took the lock:\n%s", other, tail(log, 20))
	}
	if got := countLines(log, "lost the manager lock"); got != 2 {
		t.Errorf("manager logged %d lines about losing the lock, want 2 (one per loss):\n%s", got, tail(log, 30))
	}
}
