package manager_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

const otherDelegateToken = "test-other-delegate-token"

// twoDelegateTokens gives replicas a second delegate token, "d2".
func twoDelegateTokens(cfg *manager.Config) {
	cfg.Auth.DelegateTokens = append(cfg.Auth.DelegateTokens, manager.TokenConfig{Name: "d2", SHA256: manager.HashToken(otherDelegateToken)})
}

// A delegate name is held by one stream in the whole cluster: another
// agent process claiming it on another replica is refused (AlreadyExists,
// naming the replica) and changes nothing; the same process reconnecting
// to another replica takes it over, and the first replica closes its
// stream as replaced; the record goes when the stream ends.
func TestIssue11DelegateNameHeldClusterWide(t *testing.T) {
	c := newFakeCluster()
	a := mustReplica(t, c, "replica-a", replicaOpts{cfg: twoDelegateTokens})
	b := mustReplica(t, c, "replica-b", replicaOpts{cfg: twoDelegateTokens})
	hello := func(instance string) *delegatev1.Hello {
		return &delegatev1.Hello{Name: "x", Capacity: 1, InstanceId: instance, Tags: []string{"blue"}}
	}
	wa := mustWire(t, a.srv.Addr(), delegateToken, hello("i1"))
	waitListed(t, b.srv.Addr(), 1)

	for _, tc := range []struct {
		name, token, instance string
	}{
		{"another agent process", delegateToken, "i2"},
		{"the same instance id under another token", otherDelegateToken, "i1"},
		{"no instance id", delegateToken, ""},
	} {
		_, _, err := dialWire(t, b.srv.Addr(), tc.token, hello(tc.instance))
		if status.Code(err) != codes.AlreadyExists || !strings.Contains(status.Convert(err).Message(), "replica-a") {
			t.Errorf("%s claiming x on replica B = %v, want AlreadyExists naming replica-a", tc.name, err)
		}
		if r, _ := c.record("x"); r.Replica != "replica-a" || r.InstanceID != "i1" {
			t.Errorf("after %s claimed x: record %+v, want replica-a's i1", tc.name, r)
		}
		if !wa.open() {
			t.Fatalf("%s claiming x on replica B closed the stream on replica A", tc.name)
		}
	}

	// The same agent process reconnects to replica B.
	wb := mustWire(t, b.srv.Addr(), delegateToken, hello("i1"))
	if err := wa.endErr(10 * time.Second); status.Code(err) != codes.AlreadyExists {
		t.Errorf("replica A's stream of x after x reconnected to B ended with %v, want AlreadyExists (replaced)", err)
	}
	if r, _ := c.record("x"); r.Replica != "replica-b" {
		t.Errorf("record of x after the reconnect = %+v, want replica-b's", r)
	}
	for _, r := range []*replica{a, b} {
		got := waitListed(t, r.srv.Addr(), 1)
		if got[0].GetReplica() != "replica-b" {
			t.Errorf("ListDelegates on %s = %v, want x on replica-b", r.id, got)
		}
	}
	// Tasks submitted on A reach x on B.
	done := make(chan *delegatev1.TaskInfo, 1)
	apiA, actx := operator(t, a.srv.Addr())
	go func() {
		info, _ := apiA.Ping(actx, &delegatev1.PingRequest{Selectors: []string{"blue"}})
		done <- info
	}()
	wb.credit(1)
	task := wb.nextTask(10 * time.Second)
	if task == nil {
		t.Fatal("x on replica B got no task submitted on replica A")
	}
	wb.result(task)
	if info := <-done; info.GetOutcome().GetCode() != delegatev1.Code_OK {
		t.Errorf("ping via A = %v, want OK", info.GetOutcome())
	}

	wb.cancel()
	waitFor(t, 10*time.Second, func() bool { _, ok := c.record("x"); return !ok }, "x's record to go once its stream ended")
	waitListed(t, a.srv.Addr(), 0)
	// The name is free: another process takes it on A.
	mustWire(t, a.srv.Addr(), otherDelegateToken, hello("i3"))
}

// ListDelegates of a scoped operator lists, from every replica, only the
// delegates whose scope overlaps its own, and their running counts are
// updated across replicas.
func TestIssue11ListDelegatesAcrossReplicas(t *testing.T) {
	c := newFakeCluster()
	scoped := func(cfg *manager.Config) {
		cfg.Auth.DelegateTokens = append(cfg.Auth.DelegateTokens,
			manager.TokenConfig{Name: "acme", SHA256: manager.HashToken("acme-delegate-token"), Scope: "acme"},
			manager.TokenConfig{Name: "globex", SHA256: manager.HashToken("globex-delegate-token"), Scope: "globex"})
		cfg.Auth.OperatorTokens = append(cfg.Auth.OperatorTokens,
			manager.TokenConfig{Name: "acme-op", SHA256: manager.HashToken("acme-operator-token"), Scope: "acme"})
	}
	a := mustReplica(t, c, "replica-a", replicaOpts{cfg: scoped})
	b := mustReplica(t, c, "replica-b", replicaOpts{cfg: scoped})
	wa := mustWire(t, a.srv.Addr(), "acme-delegate-token", &delegatev1.Hello{Name: "acme-1", Capacity: 2, InstanceId: "i1", Tags: []string{"blue"}})
	mustWire(t, b.srv.Addr(), "acme-delegate-token", &delegatev1.Hello{Name: "acme-2", Capacity: 2, InstanceId: "i2"})
	mustWire(t, b.srv.Addr(), "globex-delegate-token", &delegatev1.Hello{Name: "globex-1", Capacity: 2, InstanceId: "i3"})
	waitListed(t, a.srv.Addr(), 3)

	api, _ := operator(t, b.srv.Addr())
	ctx := metadataCtx(t, "acme-operator-token")
	r, err := api.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range r.GetDelegates() {
		names = append(names, d.GetName()+"@"+d.GetReplica()+"/"+d.GetTokenName())
	}
	if want := []string{"acme-1@replica-a/acme", "acme-2@replica-b/acme"}; !slices.Equal(names, want) {
		t.Errorf("ListDelegates of acme's operator on replica B = %v, want %v", names, want)
	}

	// acme-1 runs a task: replica B sees it running.
	wa.credit(2)
	go api.Ping(metadataCtx(t, operatorToken), &delegatev1.PingRequest{Selectors: []string{"blue"}, Scope: &delegatev1.Scope{Account: "acme"}})
	task := wa.nextTask(10 * time.Second)
	if task == nil {
		t.Fatal("acme-1 got no task")
	}
	waitFor(t, 10*time.Second, func() bool {
		r, err := api.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		return err == nil && len(r.GetDelegates()) > 0 && r.GetDelegates()[0].GetRunning() == 1
	}, "replica B to list acme-1 running one task")
	wa.result(task)
}

// Operator tags changed on one replica reach every replica: the replica
// holding the delegate re-applies them (EventTags) and dispatches what it
// now matches, the others forward to it and list them, and --confirm
// finds a delegate connected to another replica.
func TestIssue11OperatorTagsAcrossReplicas(t *testing.T) {
	sts := mustSharedSchema(t, 2)
	c := newFakeCluster()
	short := func(cfg *manager.Config) { cfg.Dispatch.QueueTimeout = config.Duration(500 * time.Millisecond) }
	a := mustReplica(t, c, "replica-a", replicaOpts{cfg: short, store: sts[0]})
	b := mustReplica(t, c, "replica-b", replicaOpts{cfg: short, store: sts[1]})
	far := startAgent(t, b.srv.Addr(), "far", nil, 2, nil)
	waitListed(t, a.srv.Addr(), 1)

	apiA, ctxA := operator(t, a.srv.Addr())
	if _, err := apiA.TagDelegate(ctxA, &delegatev1.TagDelegateRequest{Name: "far", Add: []string{"gold"}}); err != nil {
		t.Fatalf("TagDelegate(far, +gold) on replica A = %v", err)
	}
	// Replica B applies it: a ping there selecting gold runs on far.
	waitFor(t, 10*time.Second, func() bool {
		apiB, ctxB := operator(t, b.srv.Addr())
		info, err := apiB.Ping(ctxB, &delegatev1.PingRequest{Selectors: []string{"gold"}})
		return err == nil && info.GetOutcome().GetCode() == delegatev1.Code_OK && far.count(info.GetId()) == 1
	}, "replica B to run a ping selecting gold on far")
	// Replica A lists it and forwards to it.
	got := waitListed(t, a.srv.Addr(), 1)
	if !slices.Equal(got[0].GetOperatorTags(), []string{"gold"}) {
		t.Errorf("ListDelegates on replica A: far's operator tags = %v, want [gold]", got[0].GetOperatorTags())
	}
	waitFor(t, 10*time.Second, func() bool {
		info, err := apiA.Ping(ctxA, &delegatev1.PingRequest{Selectors: []string{"gold"}})
		return err == nil && info.GetOutcome().GetCode() == delegatev1.Code_OK && far.count(info.GetId()) == 1
	}, "replica A to forward a ping selecting gold to far")
	if _, err := apiA.TagDelegate(ctxA, &delegatev1.TagDelegateRequest{Name: "far", Confirm: true}); err != nil {
		t.Errorf("TagDelegate(far, --confirm) on replica A, far on replica B = %v, want it confirmed", err)
	}

	if _, err := apiA.TagDelegate(ctxA, &delegatev1.TagDelegateRequest{Name: "far", Remove: []string{"gold"}}); err != nil {
		t.Fatalf("TagDelegate(far, -gold) = %v", err)
	}
	waitFor(t, 10*time.Second, func() bool {
		apiB, ctxB := operator(t, b.srv.Addr())
		info, err := apiB.Ping(ctxB, &delegatev1.PingRequest{Selectors: []string{"gold"}})
		return err == nil && info.GetOutcome().GetCode() == delegatev1.Code_NO_ELIGIBLE_DELEGATE
	}, "replica B to drop gold from far")
}
