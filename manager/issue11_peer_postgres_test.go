package manager_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Three in-process replicas on one PostgreSQL database, their delegate
// records and events in PostgreSQL (ConnectDelegate, NOTIFY/LISTEN), the
// peer link over real gRPC on 127.0.0.1: every replica reaches every
// replica's delegates with sync tasks, a name is held once in the
// cluster, a reconnect to another replica takes it over, operator tags
// changed on one replica apply where the delegate is.
func TestIssue11PeerLinkOnPostgres(t *testing.T) {
	sts, dbs := mustSharedSchema(t, 3)
	c := newFakeCluster() // membership only: who is alive, where they listen
	ids := []string{"replica-a", "replica-b", "replica-c"}
	var reps []*replica
	for i, id := range ids {
		r := mustReplica(t, c, id, replicaOpts{store: sts[i], clus: dbs[i]})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); dbs[i].Listen(ctx, r.node.OnEvent) }()
		t.Cleanup(func() { cancel(); <-done })
		reps = append(reps, r)
	}
	colors := []string{"red", "green", "blue"}
	for i, r := range reps {
		startAgent(t, r.srv.Addr(), "agent-"+colors[i], []string{colors[i]}, 2, nil)
	}
	holder := map[string]string{"agent-red": ids[0], "agent-green": ids[1], "agent-blue": ids[2]}
	for _, r := range reps {
		got := waitListed(t, r.srv.Addr(), 3)
		for _, d := range got {
			if want := holder[d.GetName()]; d.GetReplica() != want {
				t.Errorf("ListDelegates on %s: %s on %q, want %q", r.id, d.GetName(), d.GetReplica(), want)
			}
		}
	}
	for _, r := range reps {
		for _, color := range colors {
			info := pingOn(t, r.srv.Addr(), nil, color)
			if got := info.GetOutcome().GetPing().GetDelegateName(); got != "agent-"+color {
				t.Errorf("ping [%s] on %s ran on %q (%v), want agent-%s", color, r.id, got, info.GetOutcome(), color)
			}
		}
	}

	hello := func(instance string) *delegatev1.Hello {
		return &delegatev1.Hello{Name: "x", Capacity: 1, InstanceId: instance}
	}
	wa := mustWire(t, reps[0].srv.Addr(), delegateToken, hello("i1"))
	_, _, err := dialWire(t, reps[2].srv.Addr(), delegateToken, hello("i2"))
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "replica-a") {
		t.Errorf("another process claiming x on replica C = %v, want AlreadyExists naming replica-a", err)
	}
	wb := mustWire(t, reps[1].srv.Addr(), delegateToken, hello("i1"))
	if err := wa.endErr(10 * time.Second); status.Code(err) != codes.AlreadyExists {
		t.Errorf("x's stream on replica A after x reconnected to B ended with %v, want AlreadyExists", err)
	}
	recOf := func(name string) *store.DelegateRecord {
		ds, err := dbs[0].Delegates(t.Context())
		if err != nil {
			t.Fatalf("Delegates: %v", err)
		}
		for i := range ds {
			if ds[i].Name == name {
				return &ds[i]
			}
		}
		return nil
	}
	if r := recOf("x"); r == nil || r.Replica != "replica-b" {
		t.Errorf("x's record after the reconnect = %+v, want replica-b's", r)
	}

	apiC, ctxC := operator(t, reps[2].srv.Addr())
	if _, err := apiC.TagDelegate(ctxC, &delegatev1.TagDelegateRequest{Name: "agent-green", Add: []string{"gold"}}); err != nil {
		t.Fatalf("TagDelegate on replica C = %v", err)
	}
	waitFor(t, 10*time.Second, func() bool {
		apiA, ctxA := operator(t, reps[0].srv.Addr())
		info, err := apiA.Ping(ctxA, &delegatev1.PingRequest{Selectors: []string{"gold"}})
		return err == nil && info.GetOutcome().GetPing().GetDelegateName() == "agent-green"
	}, "a ping selecting gold on replica A to run on agent-green (replica B)")

	wb.cancel()
	waitFor(t, 10*time.Second, func() bool { return recOf("x") == nil }, "x's record to go when its stream ended")
}
