package manager_test

import (
	"context"
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

// otherToken is a second unscoped delegate token, named "d2": an
// attacker's, or the one a delegate's token was rotated to.
const otherToken = "test-delegate-token-other"

// withOtherToken adds otherToken to a manager's config, restricted to
// allowed tags if any.
func withOtherToken(allowed ...string) func(*manager.Config) {
	return func(c *manager.Config) {
		c.Auth.DelegateTokens = append(c.Auth.DelegateTokens, manager.TokenConfig{
			Name: "d2", SHA256: manager.HashToken(otherToken), AllowedTags: allowed})
	}
}

// hello is a Hello of one agent process.
func hello(name, instance string, running ...*delegatev1.RunningTask) *delegatev1.Hello {
	return &delegatev1.Hello{Name: name, Capacity: 4, InstanceId: instance, Version: "wire", Running: running}
}

// tagDelegate calls TagDelegate and fails the test on an error.
func tagDelegate(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context, req *delegatev1.TagDelegateRequest) *delegatev1.TagDelegateResponse {
	t.Helper()
	r, err := c.TagDelegate(ctx, req)
	if err != nil {
		t.Fatalf("TagDelegate(%v): %v", req, err)
	}
	return r
}

// runOn submits an async ping with selectors, has w run it, and checks
// it succeeded on the delegate named name.
func runOn(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context, w *wire, name string, selectors ...string) {
	t.Helper()
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: selectors, Async: true})
	task := w.nextTask(5 * time.Second)
	if task.GetId() != info.GetId() {
		t.Fatalf("ping %v: the delegate %q received task %v, want %s", selectors, name, task, info.GetId())
	}
	w.result(task)
	if final := waitTask(t, c, ctx, info.GetId(), 5*time.Second); final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != name {
		t.Fatalf("ping %v = %v on %q (%s), want SUCCEEDED on %q", selectors, final.GetState(), final.GetDelegate(), final.GetOutcome().GetMessage(), name)
	}
}

// TestItem4TakeoverRefused: a stream with another delegate token (one
// restricted to allowed_tags [web]) claims the name and scope of a
// connected delegate that operators tagged prod. It is refused
// AlreadyExists, naming the holder's token name and never a token; so
// are the same claim under the real delegate's instance id, and a second
// process with the real delegate's own token. The real delegate keeps
// its stream, its operator tag and its tasks.
func TestItem4TakeoverRefused(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, withOtherToken("web"))
	c, ctx := operator(t, srv.Addr())
	real := mustWire(t, srv.Addr(), delegateToken, hello("web", "real-process"))
	if r := tagDelegate(t, c, ctx, &delegatev1.TagDelegateRequest{Name: "web", Add: []string{"prod"}}); r.GetTokenName() != "d" {
		t.Fatalf("TagDelegate(web +prod) token_name = %q, want d (the connected delegate's)", r.GetTokenName())
	}

	for _, tc := range []struct{ what, token, instance string }{
		{"another token", otherToken, "attacker-process"},
		{"another token, the real instance id", otherToken, "real-process"},
		{"the same token, another process", delegateToken, "second-process"},
	} {
		// The name as the real delegate's, and in another form of it.
		_, _, err := dialWire(t, srv.Addr(), tc.token, hello("web", tc.instance))
		_, _, err2 := dialWire(t, srv.Addr(), tc.token, hello(" WEB", tc.instance))
		for _, e := range []error{err, err2} {
			st := status.Convert(e)
			if st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), `delegate token "d"`) {
				t.Errorf("%s: Connect as web = %v, want AlreadyExists naming the holder's token d", tc.what, e)
			}
			for _, secret := range []string{delegateToken, otherToken} {
				if strings.Contains(st.Message(), secret) {
					t.Errorf("%s: the refusal %q holds a delegate token", tc.what, st.Message())
				}
			}
		}
	}

	if err := real.endErr(200 * time.Millisecond); err != errStillOpen {
		t.Fatalf("the real delegate's stream ended after the takeover attempts: %v", err)
	}
	ds := delegateNames(t, c, ctx)
	d := ds["web"]
	if len(ds) != 1 || d.GetTokenName() != "d" || !slices.Equal(d.GetOperatorTags(), []string{"prod"}) || !slices.Contains(d.GetTags(), "prod") {
		t.Fatalf("ListDelegates after the attempts = %v, want only web of token d carrying prod", ds)
	}
	runOn(t, c, ctx, real, "web", "prod")
	runOn(t, c, ctx, real, "web", "web")
}

// TestItem4SameInstanceReconnectReplaces: the same agent process (same
// instance id and token) reconnecting while the manager still holds its
// old stream replaces it and keeps the lease of the task it runs.
func TestItem4SameInstanceReconnectReplaces(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	first := mustWire(t, srv.Addr(), delegateToken, hello("web", "process-1"))
	info := ping(t, c, ctx, &delegatev1.PingRequest{Async: true})
	task := first.nextTask(5 * time.Second)
	if task.GetId() != info.GetId() {
		t.Fatalf("the first stream received %v, want task %s", task, info.GetId())
	}

	second := mustWire(t, srv.Addr(), delegateToken, hello("web", "process-1", &delegatev1.RunningTask{TaskId: task.GetId(), LeaseId: task.GetLeaseId()}))
	if err := first.endErr(5 * time.Second); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("the replaced stream ended with %v, want AlreadyExists", err)
	}
	second.result(task)
	for {
		m := second.next(5 * time.Second)
		if m == nil {
			t.Fatal("no ResultAck on the new stream")
		}
		if m.GetCancel().GetTaskId() == task.GetId() {
			t.Fatalf("the new stream's resumed task was cancelled: %v", m.GetCancel())
		}
		if a := m.GetResultAck(); a != nil {
			if !a.GetAccepted() {
				t.Fatalf("ResultAck = %v, want accepted (the lease was kept)", a)
			}
			break
		}
	}
	if final := waitTask(t, c, ctx, info.GetId(), 5*time.Second); final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetAttempt() != 1 {
		t.Errorf("task = %v attempt %d, want SUCCEEDED at attempt 1", final.GetState(), final.GetAttempt())
	}
}

// TestItem4RotatedTokenNeedsConfirm: operator tags survive token rotation
// but a delegate presenting another token than the one they were
// confirmed for does not get them, nor the tasks that select them, until
// an operator confirms them; the confirmation is persisted.
func TestItem4RotatedTokenNeedsConfirm(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tweak := func(c *manager.Config) {
		withOtherToken()(c)
		c.Dispatch.QueueTimeout = config.Duration(time.Second)
	}
	srv := mustManagerAt(t, dir, testLogger(t), tweak)
	c, ctx := operator(t, srv.Addr())
	old := mustWire(t, srv.Addr(), delegateToken, hello("web", "old-process"))
	tagDelegate(t, c, ctx, &delegatev1.TagDelegateRequest{Name: "web", Add: []string{"prod"}})
	old.cancel()
	waitDelegates(t, c, ctx, 0)

	rotated := mustWire(t, srv.Addr(), otherToken, hello("web", "new-process"))
	d := delegateNames(t, c, ctx)["web"]
	if d.GetTokenName() != "d2" || len(d.GetOperatorTags()) != 0 || slices.Contains(d.GetTags(), "prod") ||
		!slices.Equal(d.GetUnconfirmedOperatorTags(), []string{"prod"}) {
		t.Fatalf("web with the rotated token: %v; want token d2, prod unconfirmed and not in its tags", d)
	}
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"prod"}, Async: true})
	if final := waitTask(t, c, ctx, info.GetId(), 10*time.Second); final.GetOutcome().GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Fatalf("[prod] ping before the confirmation = %v, want NO_ELIGIBLE_DELEGATE", final.GetOutcome())
	}
	if got := rotated.tasks(); len(got) != 0 {
		t.Fatalf("the delegate with the unconfirmed token received %d tasks, want none", len(got))
	}

	_, err := c.TagDelegate(ctx, &delegatev1.TagDelegateRequest{Name: "nobody", Confirm: true})
	wantCode(t, "TagDelegate(nobody --confirm)", err, codes.NotFound)
	r := tagDelegate(t, c, ctx, &delegatev1.TagDelegateRequest{Name: "web", Confirm: true})
	if r.GetTokenName() != "d2" || !slices.Equal(r.GetOperatorTags(), []string{"prod"}) {
		t.Fatalf("TagDelegate(web --confirm) = %v, want prod confirmed for d2", r)
	}
	runOn(t, c, ctx, rotated, "web", "prod")

	// After a restart the confirmation holds: the old token is now the
	// other one.
	if err := srv.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv = mustManagerAt(t, dir, testLogger(t), tweak)
	c, ctx = operator(t, srv.Addr())
	back := mustWire(t, srv.Addr(), delegateToken, hello("web", "old-process-again"))
	if d := delegateNames(t, c, ctx)["web"]; len(d.GetOperatorTags()) != 0 || !slices.Equal(d.GetUnconfirmedOperatorTags(), []string{"prod"}) {
		t.Fatalf("web with the old token after the restart: %v; want prod unconfirmed", d)
	}
	back.cancel()
	waitDelegates(t, c, ctx, 0)
	again := mustWire(t, srv.Addr(), otherToken, hello("web", "new-process-again"))
	if d := delegateNames(t, c, ctx)["web"]; !slices.Equal(d.GetOperatorTags(), []string{"prod"}) {
		t.Fatalf("web with the confirmed token after the restart: %v; want prod", d)
	}
	runOn(t, c, ctx, again, "web", "prod")
}

// TestItem4DeclaredTagsGoToFirstToken: tags declared for a name no
// delegate holds yet go to the first token that holds it, and to no other.
func TestItem4DeclaredTagsGoToFirstToken(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, withOtherToken())
	c, ctx := operator(t, srv.Addr())
	if r := tagDelegate(t, c, ctx, &delegatev1.TagDelegateRequest{Name: "fresh", Add: []string{"gpu"}}); r.GetTokenName() != "" {
		t.Fatalf("TagDelegate(fresh +gpu) before any delegate = %v, want no token yet", r)
	}
	first := mustWire(t, srv.Addr(), otherToken, hello("fresh", "p1"))
	if d := delegateNames(t, c, ctx)["fresh"]; !slices.Equal(d.GetOperatorTags(), []string{"gpu"}) {
		t.Fatalf("the first delegate to hold fresh: %v, want gpu", d)
	}
	waitFor(t, 5*time.Second, func() bool {
		r, err := c.TagDelegate(ctx, &delegatev1.TagDelegateRequest{Name: "fresh"})
		return err == nil && r.GetTokenName() == "d2"
	}, "fresh's tags to be confirmed for d2")
	first.cancel()
	waitDelegates(t, c, ctx, 0)
	mustWire(t, srv.Addr(), delegateToken, hello("fresh", "p2"))
	if d := delegateNames(t, c, ctx)["fresh"]; len(d.GetOperatorTags()) != 0 || !slices.Equal(d.GetUnconfirmedOperatorTags(), []string{"gpu"}) {
		t.Fatalf("fresh with another token: %v, want gpu unconfirmed", d)
	}
}

// TestItem4OperatorTagsKeyedByScope: operator tags belong to a name in a
// scope: another tenant's delegate of the same name gets none of them,
// and its operators neither see nor change them; a claim of the name
// across scopes is refused without naming the other tenant's token.
func TestItem4OperatorTagsKeyedByScope(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, withScopedTokens)
	admin, adminCtx := operator(t, srv.Addr())
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	opB, ctxB := operatorAs(t, srv.Addr(), operatorB)

	a := mustWire(t, srv.Addr(), delegateA.token, hello("web", "a1"))
	tagDelegate(t, opA, ctxA, &delegatev1.TagDelegateRequest{Name: "web", Add: []string{"team-a"}})
	_, _, err := dialWire(t, srv.Addr(), delegateB.token, hello("web", "b1"))
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "another scope") || strings.Contains(st.Message(), "d-acct_a") {
		t.Fatalf("Connect as web with acct_b's token = %v, want AlreadyExists naming no token of acct_a", err)
	}
	a.cancel()
	waitDelegates(t, admin, adminCtx, 0)

	b := mustWire(t, srv.Addr(), delegateB.token, hello("web", "b1"))
	if d := delegateNames(t, admin, adminCtx)["web"]; len(d.GetOperatorTags())+len(d.GetUnconfirmedOperatorTags()) != 0 {
		t.Fatalf("acct_b's web: %v, want none of acct_a's operator tags", d)
	}
	if r := tagDelegate(t, opB, ctxB, &delegatev1.TagDelegateRequest{Name: "web", Add: []string{"team-b"}}); !slices.Equal(r.GetOperatorTags(), []string{"team-b"}) {
		t.Fatalf("acct_b's operator tagging its web = %q, want only team-b", r.GetOperatorTags())
	}
	b.cancel()
	waitDelegates(t, admin, adminCtx, 0)
	mustWire(t, srv.Addr(), delegateA.token, hello("web", "a2"))
	if d := delegateNames(t, admin, adminCtx)["web"]; !slices.Equal(d.GetOperatorTags(), []string{"team-a"}) {
		t.Fatalf("acct_a's web back: %v, want its own team-a only", d)
	}
}

// TestItem4DelegateTokenNamesUnique: a delegate token's name is its
// identity, so two delegate tokens may not share one.
func TestItem4DelegateTokenNamesUnique(t *testing.T) {
	t.Parallel()
	c := manager.DefaultConfig()
	c.MasterKey = testMasterKey
	c.TLS.Insecure = true
	c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("o")}}
	c.Auth.DelegateTokens = []manager.TokenConfig{
		{Name: "ci", SHA256: manager.HashToken("old")}, {Name: "ci", SHA256: manager.HashToken("new")}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `auth.delegate_tokens[1].name: "ci" is also the name of auth.delegate_tokens[0]`) {
		t.Fatalf("Validate with two delegate tokens named ci = %v, want an error naming auth.delegate_tokens[1].name", err)
	}
}
