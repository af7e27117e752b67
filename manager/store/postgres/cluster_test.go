package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/storetest"
)

// Notifications reach every listener of the same database and schema, in
// order, and no listener of another schema.
func TestIssue11NotifyReachesListenersOfTheSchemaOnly(t *testing.T) {
	dsn, schema := newSchema(t)
	a := mustOpen(t, dsn, postgres.Options{Schema: schema})
	b := mustOpen(t, dsn, postgres.Options{Schema: schema})
	_, other := newSchema(t)
	c := mustOpen(t, dsn, postgres.Options{Schema: other})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listen := func(db *postgres.DB) <-chan store.Event {
		ch := make(chan store.Event, 64)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = db.Listen(ctx, func(e store.Event) { ch <- e })
		}()
		t.Cleanup(func() { cancel(); <-done })
		return ch
	}
	onB, onC := listen(b), listen(c)
	// LISTEN takes effect asynchronously: send until the first arrives.
	deadline := time.Now().Add(10 * time.Second)
	for first := false; !first; {
		if time.Now().After(deadline) {
			t.Fatal("no notification reached the listener in 10s")
		}
		if err := a.Notify(ctx, store.Event{Kind: store.EventTags}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-onB:
			if e.Kind != store.EventTags {
				t.Fatalf("got %+v, want EventTags", e)
			}
			first = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	for len(onB) > 0 {
		<-onB
	}
	want := []store.Event{
		{Kind: store.EventQueued},
		{Kind: store.EventFinal, TaskID: "t1"},
		{Kind: store.EventDelegate, Name: "d1"},
	}
	for _, e := range want {
		if err := a.Notify(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		select {
		case got := <-onB:
			if got != w {
				t.Fatalf("event %d: got %+v, want %+v", i, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d (%+v) not received", i, w)
		}
	}
	select {
	case e := <-onC:
		t.Fatalf("a listener of schema %s heard %+v sent on schema %s", other, e, schema)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestIssue11BeatReplicasLeave(t *testing.T) {
	dsn, schema := newSchema(t)
	db := mustOpen(t, dsn, postgres.Options{Schema: schema})
	ctx := context.Background()
	r := store.Replica{ID: "r1", Cluster: "c", Advertise: "127.0.0.1:7070", Host: "h", PID: 42}
	if err := db.Beat(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := db.Beat(ctx, store.Replica{ID: "r2", Cluster: "c", Advertise: "127.0.0.1:7071", Host: "h", PID: 43}); err != nil {
		t.Fatal(err)
	}
	rs, err := db.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].ID != "r1" || rs[0].Advertise != "127.0.0.1:7070" || rs[0].PID != 42 || rs[0].Age < 0 || rs[0].Age > time.Minute {
		t.Fatalf("replicas: %+v", rs)
	}
	if err := db.Leave(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	rs, err = db.Replicas(ctx)
	if err != nil || len(rs) != 1 || rs[0].ID != "r2" {
		t.Fatalf("after leave: %+v, %v", rs, err)
	}
}

// TestIssue11ClusterConformance runs the cluster suite: each sub-test's
// replicas share a schema of their own.
func TestIssue11ClusterConformance(t *testing.T) {
	t.Parallel()
	storetest.RunClusterConformance(t, func(t *testing.T) func(string) storetest.ClusterStore {
		dsn, schema := newSchema(t)
		return func(replica string) storetest.ClusterStore {
			opts := postgres.Options{Schema: schema}
			if replica != "" {
				opts.Replica, opts.LeaseDuration = replica, storetest.ClusterLease
			}
			return mustOpen(t, dsn, opts)
		}
	})
}
