package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager/cluster"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fakeReplicas is a Replicas whose Status the test sets and counts.
type fakeReplicas struct {
	rows  []cluster.Status
	err   error
	calls int
}

func (f *fakeReplicas) Self() string { return "r1" }

func (f *fakeReplicas) Status(context.Context) ([]cluster.Status, error) {
	f.calls++
	return f.rows, f.err
}

// TestIssue11ListReplicas: a single manager answers FailedPrecondition; a
// scoped operator token (a tenant's) is refused PermissionDenied before
// anything is read; an unscoped one gets every replica, the one that
// answered marked; a store outage is Unavailable.
func TestIssue11ListReplicas(t *testing.T) {
	t.Parallel()
	s := New(nil, nil, nil, nil, nil, zerolog.Nop())
	admin := identity.With(context.Background(), identity.Identity{Kind: identity.Operator, Name: "ops"})
	if _, err := s.ListReplicas(admin, &delegatev1.ListReplicasRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ListReplicas on a single manager = %v, want FailedPrecondition", err)
	}

	started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fakeReplicas{rows: []cluster.Status{
		{Replica: store.Replica{ID: "r1", Advertise: "m1:7070", Host: "m1", PID: 10, StartedAt: started, LastSeen: started}, Alive: true, Delegates: 2},
		{Replica: store.Replica{ID: "r2", Advertise: "m2:7070", Host: "m2", PID: 20, StartedAt: started, LastSeen: started}, Alive: false},
	}}
	s.SetCluster("prod", f)

	tenant := identity.With(context.Background(), identity.Identity{Kind: identity.Operator, Name: "acme-ops", Scope: store.Scope{Account: "acme"}})
	_, err := s.ListReplicas(tenant, &delegatev1.ListReplicasRequest{})
	if status.Code(err) != codes.PermissionDenied || f.calls != 0 {
		t.Errorf("ListReplicas with a scoped token = %v after %d reads, want PermissionDenied and none", err, f.calls)
	}

	resp, err := s.ListReplicas(admin, &delegatev1.ListReplicasRequest{})
	if err != nil {
		t.Fatalf("ListReplicas = %v", err)
	}
	if resp.GetCluster() != "prod" || len(resp.GetReplicas()) != 2 {
		t.Fatalf("ListReplicas = %v, want cluster prod with 2 replicas", resp)
	}
	r1, r2 := resp.GetReplicas()[0], resp.GetReplicas()[1]
	if !r1.GetSelf() || r2.GetSelf() || !r1.GetAlive() || r2.GetAlive() || r1.GetDelegates() != 2 ||
		r1.GetAdvertise() != "m1:7070" || r2.GetPid() != 20 || !r1.GetStarted().AsTime().Equal(started) {
		t.Errorf("ListReplicas rows = %v, %v; want r1 self alive with 2 delegates, r2 dead", r1, r2)
	}

	f.err = store.Unavailable(errors.New("connection refused"))
	if _, err := s.ListReplicas(admin, &delegatev1.ListReplicasRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ListReplicas during a store outage = %v, want Unavailable", err)
	}
}
