// Package pgtest gives tests a PostgreSQL server: the one named by the
// environment variable SMD_TEST_POSTGRES_DSN, which scripts/test.sh sets
// after starting a throwaway server on 127.0.0.1 (scripts/postgres.sh).
//
// A test that needs the server and does not find it fails, unless it runs
// with -short: a skipped test that CI never runs would hide a broken store.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding the test server's DSN.
const EnvDSN = "SMD_TEST_POSTGRES_DSN"

// DSN returns the test server's connection string. Without one it skips tb
// under -short and fails it otherwise, saying how to get a server.
func DSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn != "" {
		return dsn
	}
	if testing.Short() {
		tb.Skipf("%s is not set: PostgreSQL tests skipped with -short", EnvDSN)
	}
	tb.Fatalf("%s is not set: this test needs a PostgreSQL server. Run scripts/test.sh, which starts one, "+
		"or scripts/postgres.sh -- go test ..., or point %s at a server of your own "+
		"(e.g. postgres://user@127.0.0.1:5432/postgres?sslmode=disable); -short skips it", EnvDSN, EnvDSN)
	return ""
}

// Exec runs sql on the test server's DSN in a connection of its own,
// failing tb on error.
func Exec(tb testing.TB, dsn, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("pgtest: connect to the test server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// Database creates a database of its own for tb on the test server, drops
// it when tb ends (ending any session still in it), and returns its DSN
// and name.
func Database(tb testing.TB) (dsn, name string) {
	tb.Helper()
	server := DSN(tb)
	name = Name("smdtest_")
	Exec(tb, server, "CREATE DATABASE "+name)
	tb.Cleanup(func() { Exec(tb, server, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	return WithDatabase(server, name), name
}

// Name returns prefix followed by 16 random hex digits: a database or
// schema name no other test uses.
func Name(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// WithDatabase returns dsn pointing at database name instead.
func WithDatabase(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + name
			return u.String()
		}
	}
	// key=value pairs: a later key wins.
	return dsn + " dbname=" + name
}
