package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smdelegate/smdelegate/manager/store"
)

// TestIssue10Classify: the database's availability failures (a server
// shutting down, connection exceptions, a lost manager lock, a call
// timeout) are store.ErrUnavailable; a constraint violation and the store
// sentinels are not.
func TestIssue10Classify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"lock lost", ErrLockLost, true},
		{"lock stale", ErrLockStale, false},
		{"conflict", fmt.Errorf("postgres: claim x: %w", store.ErrConflict), false},
		{"other", errors.New("bad row"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := classify(wrapErr("call", tc.err))
			if store.IsUnavailable(got) != tc.want {
				t.Errorf("IsUnavailable(classify(%v)) = %v, want %v", tc.err, !tc.want, tc.want)
			}
		})
	}
}
