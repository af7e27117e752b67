package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/cluster"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// openPG opens a store on dsn for replica id.
func openPG(t *testing.T, dsn, id string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), dsn, postgres.Options{Replica: id, LeaseDuration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// runPG joins and runs a membership of id on db until cleanup.
func runPG(t *testing.T, db *postgres.DB, cfg cluster.Config, id string, subs ...func(store.Event)) *cluster.Membership {
	t.Helper()
	m := cluster.New(cfg, db, self(id), zerolog.Nop())
	for _, fn := range subs {
		m.Subscribe(fn)
	}
	if err := m.Join(t.Context()); err != nil {
		t.Fatalf("Join(%s) = %v", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run(%s) = %v", id, err)
		}
	})
	return m
}

// eventually polls cond every beat for up to a minute (a hang guard).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIssue11MembershipOnPostgres: two replicas on one PostgreSQL schema
// see each other with their advertised addresses, hear each other's
// notifications, and a replica that leaves is gone from the other's view.
func TestIssue11MembershipOnPostgres(t *testing.T) {
	dsn, _ := pgtest.Database(t)
	cfg := cluster.Config{BeatInterval: 20 * time.Millisecond, DeadAfter: 5 * time.Second}
	events := make(chan store.Event, 64)
	a := runPG(t, openPG(t, dsn, "ra"), cfg, "ra", func(e store.Event) { events <- e })
	dbB := openPG(t, dsn, "rb")
	b := runPG(t, dbB, cfg, "rb")

	eventually(t, "ra and rb to see each other", func() bool {
		pa, pb := a.Peers(), b.Peers()
		return len(pa) == 1 && pa[0].ID == "rb" && pa[0].Advertise == "rb:7070" && len(pb) == 1 && pb[0].ID == "ra"
	})
	if !a.Alive("rb") || !b.Alive("ra") {
		t.Errorf("Alive: ra sees rb %v, rb sees ra %v; want both", a.Alive("rb"), b.Alive("ra"))
	}
	// LISTEN takes effect asynchronously: notify until one arrives.
	eventually(t, "a notification from rb to reach ra", func() bool {
		if err := dbB.Notify(t.Context(), store.Event{Kind: store.EventTags}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			return e.Kind == store.EventTags
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})

	if err := b.Leave(t.Context()); err != nil {
		t.Fatalf("Leave() = %v", err)
	}
	eventually(t, "ra to see rb gone", func() bool { return len(a.Peers()) == 0 && !a.Alive("rb") })
}
