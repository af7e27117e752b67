package manager_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// A task whose lease expires returns to the queue and goes again only to
// a delegate serving its scope: an idle delegate of another account
// never gets it, however long it waits.
func TestScopeHoldsOnLeaseExpiry(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		c.Dispatch.LeaseDuration = config.Duration(500 * time.Millisecond)
		c.Dispatch.HeartbeatInterval = config.Duration(100 * time.Millisecond)
	})
	px := mustProxy(t, srv.Addr())
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	lost := startAgentWith(t, px.addr(), delegateAP, "dlg-a-proj1", 1, func(ctx context.Context, _ *delegatev1.Task) {
		<-release
	})
	other := startAgentWith(t, srv.Addr(), delegateB, "dlg-b", 4, nil)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 2)

	opAP, ctxAP := operatorAs(t, srv.Addr(), operatorAP)
	info, err := opAP.Ping(ctxAP, &delegatev1.PingRequest{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	id := info.GetId()
	waitFor(t, 2*time.Second, func() bool { return lost.count(id) == 1 }, "dlg-a-proj1 to start the task")
	px.pause(true)
	px.cut() // dlg-a-proj1 is gone; its lease runs out

	waitFor(t, 5*time.Second, func() bool {
		r, err := opAP.GetTask(ctxAP, &delegatev1.GetTaskRequest{Id: id})
		return err == nil && r.GetState() == delegatev1.TaskState_QUEUED && r.GetAttempt() == 1
	}, "the task to return to the queue")
	time.Sleep(300 * time.Millisecond) // dlg-b has credit all along
	if r, _ := opAP.GetTask(ctxAP, &delegatev1.GetTaskRequest{Id: id}); r.GetState() != delegatev1.TaskState_QUEUED || other.count(id) != 0 {
		t.Fatalf("after the requeue the task is %v on %q (dlg-b ran it %d times), want it queued: no delegate serves %s",
			r.GetState(), r.GetDelegate(), other.count(id), connector.ScopeKey(scopeAP))
	}

	// An account delegate serves the project: it takes the task at once.
	startAgentWith(t, srv.Addr(), delegateA, "dlg-a", 1, nil)
	final := waitTask(t, opAP, ctxAP, id, 5*time.Second)
	if final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != "dlg-a" || final.GetAttempt() != 2 {
		t.Errorf("task = %v on %q attempt %d, want SUCCEEDED on dlg-a at attempt 2", final.GetState(), final.GetDelegate(), final.GetAttempt())
	}
	if other.count(id) != 0 {
		t.Errorf("dlg-b (account B) ran a task of %s", connector.ScopeKey(scopeAP))
	}
}

// Stored tasks keep their scope across a manager restart: recovered, they
// wait for a delegate serving it while one of another account idles.
func TestScopeHoldsAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tweak := func(c *manager.Config) {
		withScopedTokens(c)
		c.Dispatch.QueueTimeout = config.Duration(20 * time.Second)
	}
	srv := mustManagerAt(t, dir, testLogger(t), tweak)
	startAgentWith(t, srv.Addr(), delegateB, "dlg-b", 4, nil)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 1)
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	var ids []string
	for range 3 {
		info, err := opA.Ping(ctxA, &delegatev1.PingRequest{Async: true})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.GetId())
	}
	time.Sleep(200 * time.Millisecond)
	if err := srv.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}

	srv = mustManagerAt(t, dir, testLogger(t), tweak)
	otherB := startAgentWith(t, srv.Addr(), delegateB, "dlg-b2", 4, nil)
	admin, adminCtx = operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 1)
	time.Sleep(300 * time.Millisecond)
	opA, ctxA = operatorAs(t, srv.Addr(), operatorA)
	for _, id := range ids {
		r, err := opA.GetTask(ctxA, &delegatev1.GetTaskRequest{Id: id})
		if err != nil || r.GetState() != delegatev1.TaskState_QUEUED || connector.ScopeKey(r.GetScope()) != "acct_a" {
			t.Fatalf("recovered task %s = %v, %v; want QUEUED in scope acct_a", id, r, err)
		}
	}
	startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 4, nil) // below acct_a: not eligible either
	startAgentWith(t, srv.Addr(), delegateA, "dlg-a", 4, nil)
	for _, id := range ids {
		final := waitTask(t, opA, ctxA, id, 5*time.Second)
		if final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != "dlg-a" {
			t.Errorf("recovered task %s = %v on %q, want SUCCEEDED on dlg-a", id, final.GetState(), final.GetDelegate())
		}
		if otherB.count(id) != 0 {
			t.Errorf("dlg-b2 (account B) ran recovered task %s of acct_a", id)
		}
	}
}

// NO_ELIGIBLE_DELEGATE names the scope the task needed and lists only
// the delegates whose scope overlaps it: another account's stay unnamed.
func TestScopeNoEligibleDelegate(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		c.Dispatch.QueueTimeout = config.Duration(300 * time.Millisecond)
	})
	startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 1, nil)
	startAgentWith(t, srv.Addr(), delegateB, "dlg-b", 1, nil)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 2)

	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	info, err := opA.Ping(ctxA, &delegatev1.PingRequest{Sleep: durationpb.New(0)})
	if err != nil {
		t.Fatal(err)
	}
	o := info.GetOutcome()
	if o.GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Fatalf("Ping() as A = %v (%s), want NO_ELIGIBLE_DELEGATE: only a project delegate of A is connected", o.GetCode(), o.GetMessage())
	}
	for _, want := range []string{"whose token's scope is acct_a or above it", "dlg-a-proj1 scope acct_a/org1/proj1 ["} {
		if !strings.Contains(o.GetMessage(), want) {
			t.Errorf("message %q does not contain %q", o.GetMessage(), want)
		}
	}
	if strings.Contains(o.GetMessage(), "dlg-b") || strings.Contains(o.GetMessage(), "acct_b") {
		t.Errorf("message %q names account B's delegate", o.GetMessage())
	}
}

// A delegate of another scope cannot take over a connected delegate's
// name (one tenant must not push another's agent off), and since item 4
// neither can a second agent process of the same scope: only a reconnect
// of the same process replaces a stream. The refused agent is told
// AlreadyExists (naming the holder's token only within its own scope)
// and keeps retrying instead of exiting; the first agent keeps the name
// and its tasks.
func TestScopeNameClash(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, withScopedTokens)
	first := startAgentWith(t, srv.Addr(), delegateA, "shared-name", 1, nil)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 1)

	for _, tc := range []struct {
		tok  scopedToken
		want string // in the refusal the agent logs
		not  string // never in it
	}{
		{delegateB, "held by a connected delegate of another scope", "d-acct_a"},
		{delegateA, `with delegate token \"d-acct_a\"`, delegateA.token},
	} {
		log, buf := bufferLogger(t)
		cfg := agent.DefaultConfig()
		cfg.Manager, cfg.Token, cfg.TLS.Insecure, cfg.Name = srv.Addr(), tc.tok.token, true, "shared-name"
		cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(20*time.Millisecond), config.Duration(100*time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- agent.New(cfg, log, &agent.TaskHandler{Name: "shared-name"}, "test").Run(ctx) }()
		waitFor(t, 5*time.Second, func() bool {
			return strings.Count(string(buf.Bytes()), "manager refused the name") >= 3
		}, "the agent of %s to be refused three times", connector.ScopeKey(tc.tok.scope))
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("agent of %s named like a connected agent: Run = %v, want nil (it retried until stopped)", connector.ScopeKey(tc.tok.scope), err)
		}
		logged := string(buf.Bytes())
		if !strings.Contains(logged, tc.want) || strings.Contains(logged, tc.not) {
			t.Errorf("agent of %s logged %s; want %q in the refusal and no %q", connector.ScopeKey(tc.tok.scope), logged, tc.want, tc.not)
		}
		d := delegateNames(t, admin, adminCtx)["shared-name"]
		if connector.ScopeKey(d.GetScope()) != "acct_a" {
			t.Fatalf("shared-name after the refused clash has scope %q, want acct_a (the first agent kept)", connector.ScopeKey(d.GetScope()))
		}
		info := ping(t, admin, adminCtx, &delegatev1.PingRequest{Selectors: []string{"shared-name"}})
		if first.count(info.GetId()) != 1 {
			t.Errorf("a ping to shared-name did not run on the first agent")
		}
	}
}
