package e2e

import (
	"testing"

	"github.com/smdelegate/smdelegate/internal/harness"
)

// pgServer is a PostgreSQL server of one test's own (harness.Postgres),
// that the test may stop and start again (the suite's shared server, in
// SMD_TEST_POSTGRES_DSN, must stay up for the others).
type pgServer struct {
	*harness.Postgres
}

// startPGServer starts a server of the test's own; it is stopped
// (immediate) and removed when t ends.
func startPGServer(t testing.TB) *pgServer {
	t.Helper()
	s, err := harness.StartPostgres()
	if err != nil {
		t.Fatalf("PostgreSQL server of the test's own: %v", err)
	}
	t.Cleanup(s.Close)
	return &pgServer{s}
}

// Stop stops the server as an operator would (pg_ctl stop, fast mode).
func (s *pgServer) Stop(t testing.TB) {
	t.Helper()
	if err := s.Postgres.Stop(); err != nil {
		t.Fatal(err)
	}
}

// Start starts the stopped server again, on the same port.
func (s *pgServer) Start(t testing.TB) {
	t.Helper()
	if err := s.Postgres.Start(); err != nil {
		t.Fatal(err)
	}
}
